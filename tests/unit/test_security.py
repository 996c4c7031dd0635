"""Reliability and security (issue deliverable 5), without Ray: the uri allowlist of
corpus rows, the bearer-token check of /v1/*, the loopback default of the service,
and that no model or state file of a run is ever unpickled."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from culturesim_ray import io, tables
from culturesim_ray.cli import _embed_config, build_parser
from culturesim_ray.config import EmbedConfig
from culturesim_ray.schema import validate_rows
from culturesim_ray.serving.api import (
    AUTH_TOKEN_ENV,
    check_bearer,
    needs_token,
    token_from_env,
)
from culturesim_ray.uris import UriRoots

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "culturesim_ray"


# ---------------------------------------------------------------- uri allowlist
@pytest.fixture
def tree(tmp_path):
    """tmp/corpus/{c.jsonl, images/a.png, images/link.png -> ../../secret.txt},
    tmp/secret.txt, tmp/elsewhere/b.png, tmp/shared/s.png, tmp/corpus-evil/e.png."""
    corpus = tmp_path / "corpus"
    (corpus / "images").mkdir(parents=True)
    (corpus / "images" / "a.png").write_bytes(b"png")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not embed me")
    (corpus / "images" / "link.png").symlink_to(secret)
    for d, f in (("elsewhere", "b.png"), ("shared", "s.png"), ("corpus-evil", "e.png")):
        (tmp_path / d).mkdir()
        (tmp_path / d / f).write_bytes(b"png")
    return tmp_path


def _image(item_id: str, uri: str) -> dict:
    return {"item_id": item_id, "culture": "Greek", "modality": "image", "uri": uri}


def _embed_validation(tree: Path, rows: list[dict], uri_roots=()):
    """What run_embed does before any cluster work: read (relative uris joined to the
    corpus file's folder), then validate with the corpus's roots and the file check."""
    corpus = tree / "corpus" / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = tables.read_corpus_rows(str(corpus))
    return validate_rows(read, uri_exists=io.existing_uris,
                         uri_roots=UriRoots.of(str(corpus), uri_roots))


def test_uris_outside_the_corpus_folder_are_quarantined(tree):
    # guards the allowlist: with uri_roots=None (the check off) every one of these
    # files exists and would be embedded, the secret included
    rows = [
        _image("dotdot", "../secret.txt"),
        _image("absolute", str(tree / "elsewhere" / "b.png")),
        _image("link-rel", "images/link.png"),
        _image("link-abs", str(tree / "corpus" / "images" / "link.png")),
        _image("prefix-trap", str(tree / "corpus-evil" / "e.png")),
        _image("other-scheme", "http://127.0.0.1:9/x.png"),
        _image("fsspec-chain", "simplecache::" + str(tree / "secret.txt")),
        _image("normal", "images/a.png"),
        _image("dotdot-inside", "images/../images/a.png"),
    ]
    out = _embed_validation(tree, rows)
    reasons = {b.row["item_id"]: b.record() for b in out.bad}
    assert set(reasons) == {"dotdot", "absolute", "link-rel", "link-abs", "prefix-trap",
                            "other-scheme", "fsspec-chain"}
    assert [r["item_id"] for r in out.good] == ["normal", "dotdot-inside"]
    root = os.path.realpath(tree / "corpus")
    other = reasons.pop("other-scheme")  # no root admits a web address: said so
    assert other["field"] == "uri" and other["reason"].endswith(
        "http:// is not read (only local paths and s3://; fetch the files first and point the "
        "uris at the copies)"), other
    for rec in reasons.values():
        assert rec["field"] == "uri"
        assert rec["reason"].endswith(
            f"is outside the allowed roots (corpus folder {root}; uri_roots []; "
            "--uri-root DIR adds one)"), rec
    secret = os.path.realpath(tree / "secret.txt")
    assert f"(resolves to {secret})" in reasons["link-abs"]["reason"]


def test_an_extra_root_admits_its_files_only(tree):
    # guards uri_roots: a listed folder is allowed, its neighbours still are not
    shared = str(tree / "shared")
    rows = [_image("shared", str(tree / "shared" / "s.png")),
            _image("elsewhere", str(tree / "elsewhere" / "b.png"))]
    out = _embed_validation(tree, rows, uri_roots=[shared])
    assert [r["item_id"] for r in out.good] == ["shared"]
    (bad,) = out.bad
    assert bad.row["item_id"] == "elsewhere"
    assert bad.record()["reason"].endswith(f"uri_roots [{shared}]; --uri-root DIR adds one)")


def test_other_uri_messages_are_unchanged(tree):
    out = _embed_validation(tree, [_image("gone", "images/gone.png"),
                                   {"item_id": "t", "culture": "Greek", "modality": "image"}])
    got = {b.row["item_id"]: b.record()["reason"] for b in out.bad}
    gone = (tree / "corpus" / "images" / "gone.png").resolve()
    assert got["gone"] == f"uri: file not found or not readable: {gone}"
    assert got["t"] == "uri: missing for a image item"


def test_raw_relative_uris_are_taken_from_the_corpus_folder(tree):
    # rows not read by io (relative uris as given) are judged where they would point
    roots = UriRoots.of(str(tree / "corpus"))  # a corpus folder is its own root
    assert roots.corpus == os.path.realpath(tree / "corpus")
    out = validate_rows([_image("up", "../secret.txt"), _image("ok", "images/a.png")],
                        uri_roots=roots)
    assert [r["item_id"] for r in out.good] == ["ok"]
    assert "resolves to" in out.bad[0].reason and out.bad[0].field == "uri"


def test_text_rows_and_the_check_off_are_unaffected(tree):
    text = {"item_id": "t", "culture": "Greek", "modality": "text", "text": "Athens",
            "uri": "/etc/passwd"}  # a text row reads no file
    assert len(validate_rows([text], uri_roots=UriRoots.of(str(tree / "corpus"))).good) == 1
    assert len(validate_rows([_image("x", "/etc/passwd")]).good) == 1  # no roots: no check


def test_s3_uris_stay_under_the_corpus_prefix_or_a_listed_one():
    roots = UriRoots.of("s3://bucket/corpora/demo/c.jsonl", ["s3://shared/img/"])
    assert roots.corpus == "s3://bucket/corpora/demo"
    allowed = ["s3://bucket/corpora/demo/images/a.png", "s3a://bucket/corpora/demo/m/t.abc",
               "s3://shared/img/x.png", "s3://bucket/corpora/demo/x/../y.png"]
    refused = ["s3://bucket/corpora/demo2/a.png", "s3://bucket/corpora/demo/../secret/k",
               "s3://bucket/other.png", "s3://shared/imgs/x.png", "s3://other/corpora/demo/a",
               "/bucket/corpora/demo/a.png", "gs://bucket/corpora/demo/a.png"]
    assert [u for u in allowed if not roots.allows(u)] == []
    assert [u for u in refused if roots.allows(u)] == []
    assert UriRoots.of("s3://bucket/corpora/demo").corpus == "s3://bucket/corpora/demo"
    assert "(resolves to s3://bucket/corpora/secret/k)" in roots.outside(refused[1])
    local = UriRoots.of("/data/corpus.jsonl")
    assert not local.allows("s3://bucket/a.png")  # a local corpus reads no bucket unlisted


def test_uri_roots_config_and_flag():
    with pytest.raises(ValueError, match="neither a local path nor s3"):
        EmbedConfig(uri_roots=["http://example.org/"])
    with pytest.raises(ValueError, match="empty entry"):
        EmbedConfig(uri_roots=[" "])
    args = build_parser().parse_args(["embed", "c.jsonl", "--out", "o", "--uri-root", "/a",
                                      "--uri-root", "s3://b/p"])
    assert _embed_config(args).uri_roots == ["/a", "s3://b/p"]
    assert EmbedConfig().uri_roots == []


# ---------------------------------------------------------------- bearer token
def test_bearer_check():
    # guards the auth: removing the check (always None) fails every 401 below
    token = "s3cr3t-token"
    for header in (None, "", "Bearer", "Bearer wrong", "Basic czNjcjN0LXRva2Vu",
                   f"Bearer {token}x", f"Token {token}"):
        res = check_bearer("/v1/similar", header, token)
        assert res is not None and res.status_code == 401, header
        assert res.headers["www-authenticate"] == "Bearer"
        body = json.loads(res.body)
        assert body["error"]["field"] == "authorization" and body["error"]["message"]
    assert "missing" in json.loads(check_bearer("/v1/cultures", None, token).body)[
        "error"]["message"]
    for header in (f"Bearer {token}", f"bearer {token}", f"  Bearer  {token} "):
        assert check_bearer("/v1/similar", header, token) is None, header
    for path in ("/v1/cultures", "/v1/cultures/Greek/neighbors", "//v1/similar", "/v1",
                 "/v1/nothing"):
        assert needs_token(path) and check_bearer(path, None, token) is not None, path
    for path in ("/healthz", "/docs", "/openapi.json", "/v10"):
        assert check_bearer(path, None, token) is None, path
    assert check_bearer("/v1/similar", None, None) is None  # no token configured: open


def test_token_from_env():
    assert AUTH_TOKEN_ENV == "CULTURESIM_TOKEN"
    assert token_from_env("T", {"T": "abc"}) == "abc"
    assert token_from_env("T", {"T": ""}) is None and token_from_env("T", {}) is None


def test_compare_is_constant_time():
    src = (PKG / "serving" / "api.py").read_text()
    assert "hmac.compare_digest(" in src and "== token" not in src


def test_service_binds_loopback_by_default():
    # guards the default bind: `culturesim serve`, run_local and local.yaml
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    local = yaml.safe_load((ROOT / "serve_configs" / "local.yaml").read_text())
    assert local["http_options"]["host"] == "127.0.0.1"
    tree = ast.parse((PKG / "pipeline" / "serve_deploy.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_local")
    names = [a.arg for a in fn.args.args]
    defaults = dict(zip(names[len(names) - len(fn.args.defaults):], fn.args.defaults,
                        strict=True))
    assert ast.literal_eval(defaults["host"]) == "127.0.0.1"


# ---------------------------------------------------------------- no unpickling
def _evil_file(path: Path, marker: Path) -> None:
    """A torch file that runs code when unpickled: it writes `marker`."""

    class Evil:
        def __reduce__(self):
            return exec, (f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pwned')",)

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": Evil()}, path)


def test_the_payload_is_live(tmp_path):
    # the control: a plain unpickle of the file does run its code
    marker = tmp_path / "marker"
    _evil_file(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_run_model_files_are_never_unpickled(tmp_path):
    # guards weights_only=True in runs.load_fusion_model and the sequence encoder's
    # load_model: with weights_only=False the marker would be written
    from culturesim_ray.encoders.sequence import load_model
    from culturesim_ray.runs import load_fusion_model

    marker = tmp_path / "marker"
    train = tmp_path / "train"
    _evil_file(train / "model.pt", marker)
    (train / "model_config.json").write_text(json.dumps({"in_dims": {"text": 8}}))
    with pytest.raises(pickle.UnpicklingError):
        load_fusion_model(train)
    lstm = tmp_path / "embed" / "models" / "lstm"
    _evil_file(lstm / "lstm.pt", marker)
    (lstm / "config.json").write_text(json.dumps({"vocab_size": 5}))
    (lstm / "vocab.json").write_text(json.dumps(["<pad>", "n60", "n62", "n64", "n65"]))
    with pytest.raises(pickle.UnpicklingError):
        load_model(lstm)
    assert not marker.exists()


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_every_torch_load_is_weights_only():
    # guards future edits: a torch.load without weights_only=True (model.pt, lstm.pt,
    # state.pt, train_state.pt, weights), an alias of torch.load, pickle.load or
    # np.load(allow_pickle=True) anywhere in the package fails here
    calls, problems = [], []
    for f in sorted(PKG.rglob("*.py")):
        src = f.read_text()
        rel = f.relative_to(ROOT)
        for m in re.finditer(r"torch\.load\(", src):  # the grep: the call's own text
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            if "weights_only=True" not in src[m.start():i]:
                problems.append(f"{rel}: {src[m.start():i]}")
        tree = ast.parse(src)
        as_func = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                kw = {k.arg: k.value for k in node.keywords}
                if name in ("torch.load", "torch.serialization.load"):
                    calls.append(str(rel))
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and \
                        kw["weights_only"].value is True
                    if not ok:
                        problems.append(f"{rel}:{node.lineno}: {name} without weights_only=True")
                elif name.endswith("np.load") or name.endswith("numpy.load"):
                    ap = kw.get("allow_pickle")
                    if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                        problems.append(f"{rel}:{node.lineno}: np.load with allow_pickle")
                elif name in ("pickle.load", "pickle.loads", "cloudpickle.load",
                              "cloudpickle.loads", "joblib.load", "dill.load"):
                    problems.append(f"{rel}:{node.lineno}: {name}")
            elif isinstance(node, ast.Attribute) and id(node) not in as_func and \
                    _dotted(node) == "torch.load":
                problems.append(f"{rel}:{node.lineno}: torch.load used as a value")
            elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle") and \
                    any(a.name in ("load", "loads") for a in node.names):
                problems.append(f"{rel}:{node.lineno}: from {node.module} import load")
    assert problems == []
    # not vacuous: the loaders of model.pt, lstm.pt and state.pt are among those checked
    for f in ("culturesim_ray/runs.py", "culturesim_ray/encoders/sequence.py",
              "culturesim_ray/pipeline/train.py", "culturesim_ray/pipeline/train_lstm.py"):
        assert f in calls, f
