"""`culturesim` command line: thin wrappers over pipeline functions.

    culturesim demo --out runs/demo                 build the demo corpus and run every job on it
    culturesim demo-corpus --out DIR                only write the demo corpus
    culturesim embed CORPUS --out DIR               the Ray Data embedding job
    culturesim train EMBED_DIR --out DIR            staged MoCo training (Ray Train)
    culturesim allpairs EMBEDDINGS --out DIR        culture-by-culture similarity per theme
    culturesim evaluate RUN_DIR --gold GOLD         agreement of every similarity with expert pairs
    culturesim fit-metric RUN_DIR --gold G --out F  a metric of the raw means fitted on gold
    culturesim report RUN_DIR                       maps, dendrogram, network, tables, report.html
    culturesim serve RUN_DIR [--port 8000]          the similarity service (Ray Serve)
    culturesim continue-melody SEED --model DIR     continue a melody (--out F.mid)
    culturesim add-theme RUN_DIR --theme T          one new theme head on a finished run
    culturesim doctor [--config YAML]               is everything the config needs here?
    culturesim adapt CORPUS --out DIR               MLM-adapt the MiniLM text encoder (Ray Train)
    culturesim align --out DIR [--pairs P]          project image features into the text space
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturesim_ray.cli_adapt import add_adapt_parser
from culturesim_ray.cli_align import add_align_parser
from culturesim_ray.cli_args import add_allpairs_args, add_embed_args
from culturesim_ray.cli_report import add_report_parsers
from culturesim_ray.cli_themes import add_theme_parser
from culturesim_ray.cli_train import add_train_parser
from culturesim_ray.config import AllPairsConfig, EmbedConfig, S3Config, load_yaml
from culturesim_ray.encoders.base import PRECISIONS
from culturesim_ray.progress import Stage


def _summary(what: str, stage: Stage) -> None:
    from culturesim_ray.progress import summary

    summary(what, stage)


def _embed_config(args: argparse.Namespace) -> EmbedConfig:
    data: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    overrides = {
        "text_encoder": args.text_encoder, "image_encoder": args.image_encoder,
        "num_actors": args.actors, "batch_size": args.batch_size,
        "num_cpus_per_actor": args.cpus_per_actor, "num_gpus_per_actor": args.gpus_per_actor,
        "blocks": args.blocks, "max_length": args.max_length,
        "max_windows": args.max_windows,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if getattr(args, "text_model", None):  # absolute: serving reads it from the manifest
        data["text_model"] = str(Path(args.text_model).absolute())
    if getattr(args, "image_align", None):
        data["image_align"] = str(Path(args.image_align).absolute())
    if args.strict:
        data["strict"] = True
    if args.s3_endpoint:
        data["s3"] = {**data.get("s3", {}), "endpoint_url": args.s3_endpoint}
    if args.uri_root:  # added to the config file's list
        data["uri_roots"] = [*data.get("uri_roots", []), *args.uri_root]
    cfg = EmbedConfig(**data)
    if not isinstance(cfg.s3, S3Config):  # pragma: no cover - pydantic guarantees it
        raise TypeError("s3 config")
    return cfg


def cmd_embed(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.embed import run_embed

    cfg = _embed_config(args)
    if args.check:
        return _check_corpus(args, cfg)
    with Stage("embed", unit="rows") as st:
        report = run_embed(args.corpus, args.out, cfg, address=args.address,
                           overwrite=args.overwrite, log=st.log)
    _summary(f"{report.counts_line()} -> {args.out}", st)
    if report.quarantined:
        from culturesim_ray.layout import EmbedLayout

        print(f"embed: each quarantined row, with its field, reason and source row: "
              f"{EmbedLayout(args.out).quarantine} (culturesim_ray.runs.read_quarantine)")
    for note in report.notes:  # what the user should know about this corpus
        print(f"embed: note: {note}")
    if report.empty:  # why, with one quarantined row (read only here)
        from culturesim_ray.runs import quarantine_example

        print(f"embed: error: {report.nothing_embedded(quarantine_example(args.out, cfg))}")
    return 0 if report.balanced and not report.empty else 1


def _check_corpus(args: argparse.Namespace, cfg: EmbedConfig) -> int:
    """`embed --check`: exit 0 when a run would embed something and not be refused."""
    from culturesim_ray.pipeline.embed_check import run_check

    with Stage("check", unit="rows") as st:
        report = run_check(args.corpus, args.out, cfg, address=args.address, log=st.log)
    for line in report.lines():
        print(f"embed --check: {line}")
    return 0 if sum(report.usable.values()) and not report.refused else 1


def _allpairs_config(args: argparse.Namespace) -> AllPairsConfig:
    data: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    overrides = {
        "similarity": args.similarity, "k": args.k, "block_rows": args.block_rows,
        "pooling": args.pooling, "modality": args.modality, "dense_limit": args.dense_limit,
        "prefilter": args.prefilter, "nlist": args.nlist, "nprobe": args.nprobe,
        "set_block": args.set_block, "metric": args.metric,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.set_option:
        import yaml

        options = dict(data.get("set_options", {}))
        for part in args.set_option:
            name, sep, value = part.partition("=")
            if not sep or not name:
                raise ValueError(f"--set-option expects NAME=VALUE, got {part!r}")
            options[name] = yaml.safe_load(value)  # 0.5 -> float, 64 -> int, null -> None
        data["set_options"] = options
    if args.alpha:
        alpha = {}
        for part in args.alpha:
            theme, sep, weight = part.partition("=")
            if not sep:
                raise ValueError(f"--alpha expects THEME=WEIGHT, got {part!r}")
            alpha[theme] = float(weight)
        data["alpha"] = alpha
    if args.heads:
        data["heads"] = args.heads
    if args.s3_endpoint:
        data["s3"] = {**data.get("s3", {}), "endpoint_url": args.s3_endpoint}
    return AllPairsConfig(**data)


def cmd_allpairs(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.allpairs import run_allpairs

    with Stage("all-pairs", unit="blocks") as st:
        m = run_allpairs(args.embeddings, args.out, _allpairs_config(args),
                         address=args.address, overwrite=args.overwrite, log=st.log)
    _summary(f"{m['counts']['pairs']} pairs over {len(m['counts']['heads'])} heads "
             f"-> {args.out}", st)
    if "metric" in m:  # the map follows a fit on gold: say which, and how it carried
        fit, lco = m["metric"]["fitted_on"], m["metric"].get("leave_cultures_out")
        carried = (f"; on cultures left out of its fit, Spearman {lco['spearman']:.3f} "
                   f"against the cosine's {lco['cosine_spearman']:.3f}" if lco else "")
        print(f"all-pairs: general head by the metric of {args.metric} (fitted on "
              f"{fit['pairs']} gold pairs over {len(fit['cultures'])} cultures{carried})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.serve_deploy import run_local

    run_local(args.run_dir, host=args.host, port=args.port, use_gpu=args.gpu,
              precision=args.precision,
              **({"auth_token_env": args.auth_token_env} if args.auth_token_env else {}))
    return 0


def cmd_continue_melody(args: argparse.Namespace) -> int:
    from music21 import note, stream

    from culturesim_ray.encoders.music import detokenize, parse_events
    from culturesim_ray.encoders.sequence import load_model, read_tokens, sample_continuation
    from culturesim_ray.layout import melody_model_dir

    if "://" not in args.seed_file and not Path(args.seed_file).is_file():
        raise FileNotFoundError(f"seed file not found: {args.seed_file}")
    model, vocab = load_model(melody_model_dir(args.model))
    seed_tokens = read_tokens(args.seed_file)
    cont = sample_continuation(model, vocab, seed_tokens, steps=args.steps,
                               temperature=args.temperature, seed=args.seed)
    with open(args.seed_file, "rb") as fh:
        seed_events = parse_events(fh.read(), args.seed_file)
    last = next((p for p, _ in reversed(seed_events) if p is not None), 60)
    # continuation intervals start from the seed's last pitch
    events = seed_events + detokenize(["n+0_0.25"] + cont, start_pitch=last)[1:]
    s = stream.Stream()
    for pitch, ql in events:
        el = note.Rest(quarterLength=ql) if pitch is None else note.Note(pitch, quarterLength=ql)
        s.append(el)
    fmt = "midi" if args.out.lower().endswith((".mid", ".midi")) else "musicxml"
    s.write(fmt, fp=args.out)
    print(f"seed {len(seed_events)} events + {len(cont)} generated tokens -> {args.out}")
    print("continuation:", " ".join(cont))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.doctor import report, run_doctor

    cfg = EmbedConfig(**(load_yaml(args.config) if args.config else {}))
    if args.s3_endpoint:
        cfg = EmbedConfig(**{**cfg.model_dump(), "s3": {**cfg.s3.model_dump(),
                                                         "endpoint_url": args.s3_endpoint}})
    return report(run_doctor(cfg, args.address, args.bucket, skip_ray=args.no_ray))


def cmd_demo_corpus(args: argparse.Namespace) -> int:
    from culturesim_ray.demo import build_demo_corpus

    path = build_demo_corpus(args.out, per_culture_per_lang=args.per_culture)
    print(f"demo corpus: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from culturesim_ray import io
    from culturesim_ray.pipeline.demo_run import run_demo

    io.require_local(args.out, "demo --out", "it writes a whole run there, serving state included")
    return run_demo(Path(args.out), _embed_config(args), args.per_culture, args.address,
                    quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culturesim", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed a corpus with Ray Data")
    p.add_argument("corpus", help="Parquet/JSONL/CSV/TSV/XLSX file or directory, local or s3://")
    p.add_argument("--out", required=True, help="output directory, local or s3://")
    add_embed_args(p)
    p.add_argument("--check", action="store_true",
                   help="read and validate the corpus and say what a run would embed, "
                        "quarantine and note (items per culture, the text encoder); embed "
                        "and write nothing")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("allpairs", help="culture-by-culture top-k similarity per theme")
    p.add_argument("embeddings", help="an embed run dir, a run dir (reads RUN/embed), a train "
                   "run or all-pairs output dir (its culture_embeddings.parquet), or a Parquet "
                   "of item or culture vectors")
    p.add_argument("--out", required=True)
    add_allpairs_args(p)
    p.set_defaults(func=cmd_allpairs)

    p = sub.add_parser("demo", help="build the demo corpus and run the jobs on it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--per-culture", type=int, default=20, help="texts per culture and language")
    p.add_argument("--quick", action="store_true", help="a smaller corpus and a shorter "
                   "training run (a smoke test, under a minute or two)")
    add_embed_args(p)
    p.set_defaults(func=cmd_demo)

    add_train_parser(sub)

    add_report_parsers(sub)

    p = sub.add_parser("serve", help="serve a run's model over HTTP (Ray Serve, local)")
    p.add_argument("run_dir", nargs="?", default="runs/demo",
                   help="a run with embed/, train/ and allpairs/, or a train run's "
                        "directory (default runs/demo)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--auth-token-env", metavar="VAR",
                   help="when this variable is set, /v1/* requires 'Authorization: Bearer "
                        "$VAR' (default CULTURESIM_TOKEN)")
    p.add_argument("--gpu", action="store_true", help="models on CUDA when present")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the query text encoder's dtype (auto: bfloat16 where the "
                        "hardware computes it natively)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("continue-melody", help="continue a melody with a trained melody LSTM")
    p.add_argument("seed_file", help="the melody to continue (.abc, .mid, .musicxml, .mxl, .krn)")
    p.add_argument("--model", required=True, help="the melody model: an embed run's "
                   "models/lstm, the embed run, or its run directory")
    p.add_argument("--out", required=True, help=".mid (MIDI) or .musicxml")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_continue_melody)

    p = sub.add_parser("doctor", help="check Ray, GPUs, models, S3 and versions")
    p.add_argument("--config", help="an embed config YAML (its GPU and S3 needs are checked)")
    p.add_argument("--bucket", help="S3 bucket that must be reachable")
    p.add_argument("--s3-endpoint")
    p.add_argument("--address", help="Ray address (else RAY_ADDRESS, else a local instance)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray check")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo-corpus", help="only write the demo corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--per-culture", type=int, default=20)
    p.set_defaults(func=cmd_demo_corpus)
    add_adapt_parser(sub)
    add_theme_parser(sub)
    add_align_parser(sub)
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="store_true", help="print Ray's own logs "
                       "and full tracebacks (else they go to the log file)")
        # an option is named in full: `train --steps 10` is an error, not --steps-per-epoch
        p.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    from culturesim_ray.fingerprint import SettingsMismatchError
    from culturesim_ray.pipeline.ray_env import configure_output, set_safe_env
    from culturesim_ray.progress import error_line, failed_stage, innermost, log_path
    from culturesim_ray.report.evaluate import GoldError
    from culturesim_ray.schema import StrictModeError
    from culturesim_ray.tables import CorpusFormatError

    set_safe_env()
    args = build_parser().parse_args(argv)
    configure_output(args.verbose, native_stderr=argv is None)  # the console command
    try:
        return int(args.func(args) or 0)
    except (CorpusFormatError, StrictModeError, FileNotFoundError, GoldError,
            SettingsMismatchError, ValueError) as exc:  # ValueError: config validation
        stage = failed_stage()
        msg = str(innermost(exc)).strip()  # a user error raised in a Ray task: its own words
        print(f"culturesim: {stage + ' failed' if stage else 'error'}: {msg}"
              + (f" (log: {log_path()})" if stage else ""), file=sys.stderr)
        return 2
    except Exception as exc:  # a failed stage: one line (the traceback is in the log file)
        if args.verbose:
            raise
        print(error_line(exc, args.command), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
