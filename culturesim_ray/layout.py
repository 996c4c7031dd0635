"""Where each artifact of a run lives (pure: paths only, no I/O).

Every stage, the report and serving find files through these classes instead
of spelling paths themselves. A run directory (what `culturesim demo --out RUN`
writes) holds one directory per stage; each stage's directory can also live
elsewhere (local or s3://) and be named on its own:

    RUN/embed/           EmbedLayout
    RUN/train/           TrainLayout
    RUN/allpairs/        AllPairsLayout (over the raw embeddings)
    RUN/allpairs-model/  AllPairsLayout (over the trained model's heads)
"""

from __future__ import annotations

from dataclasses import dataclass

from culturesim_ray import io


@dataclass(frozen=True)
class _StageLayout:
    """What every stage's directory holds: its manifest and its settings' fingerprint."""

    root: str

    @property
    def manifest(self) -> str:
        return io.join(self.root, "manifest.json")

    @property
    def fingerprint(self) -> str:
        """The settings that shaped this stage's outputs (`culturesim_ray.fingerprint`)."""
        return io.join(self.root, "fingerprint.json")


@dataclass(frozen=True)
class EmbedLayout(_StageLayout):
    """An embed run: vectors per modality, the quarantine, fitted encoder state."""

    def embeddings(self, modality: str | None = None) -> str:
        """OUT/embeddings/ or OUT/embeddings/<modality>/ (Parquet files)."""
        base = io.join(self.root, "embeddings")
        return base if modality is None else io.join(base, modality)

    @property
    def quarantine(self) -> str:
        """OUT/quarantine/: a Parquet dataset (several files written by the workers)."""
        return io.join(self.root, "quarantine")

    @property
    def legacy_quarantine(self) -> str:
        """OUT/quarantine.parquet, the single file of runs before the streaming ingest."""
        return io.join(self.root, "quarantine.parquet")

    @property
    def models(self) -> str:
        return io.join(self.root, "models")

    @property
    def tfidf(self) -> str:
        return io.join(self.root, "models", "tfidf.npz")

    @property
    def lstm(self) -> str:
        return io.join(self.root, "models", "lstm")

    @property
    def lstm_sample(self) -> str:
        """The melody LSTM's training sample: Parquet parts of token sequences
        (column `tokens`), written by the parsing tasks, read by the trainer."""
        return io.join(self.root, "models", "lstm-sample")


@dataclass(frozen=True)
class AllPairsLayout(_StageLayout):
    """An all-pairs run: pooled culture vectors, finished blocks, pairs, matrices."""

    def blocks(self, head: str | None = None) -> str:
        base = io.join(self.root, "blocks")
        return base if head is None else io.join(base, head)

    @property
    def culture_embeddings(self) -> str:
        return io.join(self.root, "culture_embeddings.parquet")

    @property
    def pairs(self) -> str:
        return io.join(self.root, "pairs.parquet")

    @property
    def matrices(self) -> str:
        return io.join(self.root, "matrices")


@dataclass(frozen=True)
class GraphLayout(_StageLayout):
    """The item graph stage (`pipeline.graph`): per modality its raw vectors, its
    items and every edge into it (`graph.build` holds the contract and readers)."""

    def modality(self, m: str) -> str:
        return io.join(self.root, m)

    def x(self, m: str) -> str:
        """ROOT/<m>/x.npy: float32 (N_m, d) raw vectors, rows in the order of items(m)."""
        return io.join(self.root, m, "x.npy")

    def items(self, m: str) -> str:
        """ROOT/<m>/items.parquet: item_id, culture, themes, artifact_id (by item_id)."""
        return io.join(self.root, m, "items.parquet")

    def edges(self, m: str) -> str:
        """ROOT/<m>/edges/: Parquet files of the edges into m (src, dst, weight,
        relation, src_modality)."""
        return io.join(self.root, m, "edges")

    def index(self, m: str) -> str:
        """ROOT/<m>/index.faiss: the kNN index over x(m)'s normalised rows (the
        graph's search tasks memory-map it)."""
        return io.join(self.root, m, "index.faiss")

    @property
    def relations_quarantine(self) -> str:
        return io.join(self.root, "relations_quarantine.jsonl")


@dataclass(frozen=True)
class TrainLayout(_StageLayout):
    """A train run: the model's weights and config, its culture vectors, holdout."""

    @property
    def model(self) -> str:
        return io.join(self.root, "model.pt")

    @property
    def model_config(self) -> str:
        return io.join(self.root, "model_config.json")

    @property
    def culture_embeddings(self) -> str:
        return io.join(self.root, "culture_embeddings.parquet")

    @property
    def holdout(self) -> str:
        return io.join(self.root, "holdout.parquet")

    @property
    def map_whitening(self) -> str:
        """Per modality, the culture map's within-culture whitening (`ops.whiten`)."""
        return io.join(self.root, "map_whitening.npz")

    @property
    def relations_quarantine(self) -> str:
        return io.join(self.root, "relations_quarantine.jsonl")

    @property
    def store(self) -> str:
        """What training workers memory-map (`training.store`): splits, CSR graphs."""
        return io.join(self.root, "store")

    @property
    def serving(self) -> str:
        """What a serving replica loads (`serving.artifacts`): layer states, indexes."""
        return io.join(self.root, "serving")

    @property
    def export_states(self) -> str:
        """The export's scratch: every item's state at every layer (`training.export`),
        removed once the culture vectors and the serving state are written."""
        return io.join(self.root, "export_states")

    @property
    def graph(self) -> GraphLayout:
        """TRAIN/graph/: the item graph the graph stage writes for this run."""
        return GraphLayout(io.join(self.root, "graph"))

    def embed_input(self) -> str | None:
        """The embed run this train run read: its manifest's `input` (the graph
        stage's for runs written before the train manifest kept it), or None."""
        for manifest in (self.manifest, self.graph.manifest):
            found = io.read_json(manifest).get("input") if io.exists(manifest) else None
            if found:
                return str(found)
        return None


@dataclass(frozen=True)
class RunLayout:
    """A run directory holding one directory per stage."""

    root: str

    @property
    def embed(self) -> EmbedLayout:
        return EmbedLayout(io.join(self.root, "embed"))

    @property
    def train(self) -> TrainLayout:
        return TrainLayout(io.join(self.root, "train"))

    @property
    def allpairs(self) -> AllPairsLayout:
        return AllPairsLayout(io.join(self.root, "allpairs"))

    @property
    def allpairs_model(self) -> AllPairsLayout:
        return AllPairsLayout(io.join(self.root, "allpairs-model"))


def melody_model_dir(path: str) -> str:
    """The melody LSTM folder `path` names: the folder itself (lstm.pt, vocab.json,
    config.json), an embed run (its models/lstm) or a run directory (embed/models/lstm).
    s3:// paths are taken as the folder itself."""
    if io.is_s3(path):
        return path
    for candidate in (path, EmbedLayout(path).lstm, RunLayout(path).embed.lstm):
        if io.exists(io.join(candidate, "config.json")):
            return candidate
    raise FileNotFoundError(
        f"{path}: no melody model here (a folder with lstm.pt, vocab.json and config.json; "
        f"an embed run of a corpus with tunes writes one to EMBED/models/lstm: pass that "
        f"folder, the embed run or its run directory)")
