"""The demo corpus: prose spoken by several engines and voices, augmented, in five disjoint splits.

==================  ====================================  ==========================================
split               text                                  speech
==================  ====================================  ==========================================
train               fortunes                              piper, flite, festival voices (augmented)
dev                 fortunes never in train               the training voices (augmented)
test_in_domain      fortunes never in train or dev        the training voices (augmented)
test_unseen_text    the project's everyday sentences      the training voices (augmented)
test_unseen_speech  fortunes never in train, dev or test  espeak-ng voices (augmented), plus ALSA's
                                                          recorded human voice where installed
==================  ====================================  ==========================================

*dev* chooses checkpoints and the merge scale (:mod:`mkdeploy.distill.select`); the three test sets never
choose anything. espeak-ng never speaks a training, dev or in-domain clip. Each clip is a pure function of
(seed, split, index): its text, voice, rate and augmentation seed are drawn from a generator seeded with
them alone, so a half-built corpus resumes to the same files and two builds are identical.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.demo.augment import AugmentSpec, augment
from mkdeploy.demo.synthesis import TRAIN_VOICES, UNSEEN_VOICES, Voice, check_engines, synthesize
from mkdeploy.demo.text import everyday_sentences, fortunes, plain_fortunes
from mkdeploy.errors import MkdError
from mkdeploy.fsutil import atomic_write_text

SPLITS = ("train", "dev", "test_in_domain", "test_unseen_text", "test_unseen_speech")
TEST_SPLITS = SPLITS[2:]
#: each test split's key in the headline JSON, and its name in tables
SETS = {"test_in_domain": "in_domain", "test_unseen_text": "unseen_text", "test_unseen_speech": "unseen_speech"}
TITLES = {"test_in_domain": "in-domain", "test_unseen_text": "unseen text", "test_unseen_speech": "unseen speech"}
#: ALSA's channel-test recordings: a human voice no engine made (alsa-utils). Noise.wav holds no speech.
ALSA_DIR = Path("/usr/share/sounds/alsa")


@dataclass
class CorpusSpec:
    """How a corpus is made; stored beside it so an identical request reuses it.

    Attributes:
        n_train, n_dev, n_test: clips per split (n_test for each of the three test sets; the unseen-text
            set holds at most the 73 shipped sentences).
        rate: range of speaking rates (> 1 slower).
        sentences_per_clip: sentences joined into one clip (uniform in the range), for longer clips.
        augment: the augmentation chain's probabilities and SNR range.
    """

    # sized for the demo's 20-minute budget on 2 CPU cores: the teacher's pass costs ~1.4 s per training clip
    # (base's encoder, compute-bound at ~1.1 s per 30 s window) and keeps about three in four
    n_train: int = 192
    #: training sentences reserved before the held-out ones (n_train up to it moves no test sentence)
    train_pool: int = 240
    n_dev: int = 32
    n_test: int = 40
    #: sentences reserved for each prose test set (n_test up to it takes a prefix of the same sentences)
    test_pool: int = 50
    seed: int = 0
    rate: tuple[float, float] = (0.85, 1.2)
    sentences_per_clip: tuple[int, int] = (1, 1)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    human_clips: bool = True
    #: only fortunes a speaker would say as written (:func:`~mkdeploy.demo.text.is_plain`)
    plain_text: bool = False
    #: the training voices as ``engine/name``; empty: every voice of ``TRAIN_VOICES``
    train_voices: tuple[str, ...] = ()


@dataclass
class Corpus:
    """Manifest paths by split."""

    root: Path
    manifests: dict[str, Path]

    def __getitem__(self, split: str) -> Path:
        return self.manifests[split]


def demo_corpus() -> CorpusSpec:
    """The demo's corpus, chosen by measurement (benchmarks/results/corpus_calibration.md): the two voices
    base transcribes well and tiny.en clearly worse (Piper joe, festival's HTS slt), noise at 20-30 dB SNR
    on every clip (the only band where the teacher stayed under 8%), plain fortunes, 2-3 per clip (more
    words per 30 s window: the encoder's cost is per window). Sized for the 20-minute budget."""
    return CorpusSpec(
        n_train=96,
        train_pool=120,
        n_dev=24,
        n_test=32,
        test_pool=40,
        sentences_per_clip=(2, 3),
        augment=AugmentSpec(p_noise=1.0, snr_db=(20.0, 30.0)),
        plain_text=True,
        train_voices=("piper/joe", "festival/cmu_us_slt_arctic_hts"),
    )


def split_texts(spec: CorpusSpec) -> dict[str, list[str]]:
    """The text of every clip of every split; prose splits are disjoint by construction.

    Raises:
        MkdError: asked for more prose than the source holds.
    """
    lo, hi = spec.sentences_per_clip
    if not 1 <= lo <= hi:
        raise MkdError(f"sentences_per_clip {spec.sentences_per_clip}: give 1 <= low <= high")
    prose = plain_fortunes() if spec.plain_text else fortunes()
    np.random.default_rng([spec.seed, 1]).shuffle(prose)
    sizes = {"train": spec.n_train, "dev": spec.n_dev, "test_in_domain": spec.n_test, "test_unseen_speech": spec.n_test}
    counts = {
        s: np.random.default_rng([spec.seed, 2, k]).integers(lo, hi + 1, n).tolist()
        for k, (s, n) in enumerate(sizes.items())
    }
    need = (
        sum(map(sum, counts.values()))
        + max(0, spec.train_pool * hi - sum(counts["train"]))
        + 2 * max(0, spec.test_pool * hi - spec.n_test)
    )
    if need > len(prose):
        raise MkdError(f"the corpus asks for {need} sentences; the fortunes hold {len(prose)}")
    out: dict[str, list[str]] = {}
    pos = start = 0
    for split, cs in counts.items():
        texts = []
        for c in cs:
            texts.append(" ".join(prose[pos : pos + c]))
            pos += c
        out[split] = texts
        # every split after a fixed pool of sentences: a smaller training set or test set leaves every other
        # split's sentences where they are (and a smaller test set is a prefix of the larger one)
        if split == "train":
            pos = max(pos, spec.train_pool * hi)
        elif split.startswith("test_"):
            pos = max(pos, start + spec.test_pool * hi)
        start = pos
    everyday = everyday_sentences()
    np.random.default_rng([spec.seed, 3]).shuffle(everyday)
    # joined like the prose (one sentence per clip: the first n_test); at most the 73 shipped sentences
    counts_u = np.random.default_rng([spec.seed, 4]).integers(lo, hi + 1, spec.n_test).tolist()
    unseen, pos = [], 0
    for c in counts_u if hi > 1 else [1] * spec.n_test:
        if pos >= len(everyday):
            break
        unseen.append(" ".join(everyday[pos : pos + c]))
        pos += c
    out["test_unseen_text"] = unseen
    return {s: out[s] for s in SPLITS}


def _voices(spec: CorpusSpec, split: str) -> list[tuple[str, str]]:
    if split != "test_unseen_speech" and spec.train_voices:
        return [(v.split("/", 1)[0], v.split("/", 1)[1]) for v in spec.train_voices]
    table = UNSEEN_VOICES if split == "test_unseen_speech" else TRAIN_VOICES
    return [(e, v) for e, vs in table.items() for v in vs]


def clip_plan(spec: CorpusSpec, split: str, index: int, text: str) -> dict:
    """Voice, rate and augmentation seed of one clip, drawn from (seed, split, index) alone."""
    k = SPLITS.index(split)
    rng = np.random.default_rng([spec.seed, 10 + k, index])
    voices = _voices(spec, split)
    engine, name = voices[int(rng.integers(len(voices)))]
    return {
        "id": f"{split}_{index:04d}",
        "text": text,
        "engine": engine,
        "voice": name,
        "rate": round(float(rng.uniform(*spec.rate)), 3),
        "augment_seed": [spec.seed, 100 + k, index],
    }


def _make_clip(plan: dict, path: Path, spec: CorpusSpec) -> None:
    import soundfile as sf  # imported on use: libsndfile loads on first audio read

    if path.exists():
        return
    audio = synthesize(plan["text"], Voice(plan["engine"], plan["voice"], plan["rate"]))
    audio = augment(audio, plan["augment_seed"], spec.augment)
    tmp = path.with_name(f".{path.name}.tmp.wav")
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
    tmp.replace(path)


def _human_rows(split_dir: Path) -> list[dict]:
    """ALSA's recorded channel names ("Front Center", ...), copied in as they are."""
    rows = []
    for wav in sorted(ALSA_DIR.glob("*.wav")) if ALSA_DIR.is_dir() else []:
        if wav.stem == "Noise":
            continue
        target = split_dir / f"human_{wav.stem.lower()}.wav"
        if not target.exists():
            target.write_bytes(wav.read_bytes())
        rows.append(
            {
                "id": target.stem,
                "audio": target.name,
                "text": wav.stem.replace("_", " "),
                "engine": "human",
                "voice": "alsa",
            }
        )
    return rows


def build_corpus(
    out: str | Path, spec: CorpusSpec | None = None, workers: int = 2, on_progress: Callable[[int], None] | None = None
) -> Corpus:
    """Synthesise every split (clips already on disk are kept; they are identical by construction).

    Args:
        out: the corpus folder: one sub-folder and one JSONL manifest per split, plus corpus.json.
        workers: clips synthesised at once (the engines are separate processes or release the GIL).

    Returns:
        a :class:`Corpus` with each split's manifest (rows carry engine, voice and rate besides the text).
    """
    spec = spec or CorpusSpec()
    out = Path(out)
    check_engines(sorted({e for s in SPLITS for e, _ in _voices(spec, s)}))
    texts = split_texts(spec)
    stamp = out / "corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) != json.loads(json.dumps(asdict(spec))):
        # clips on disk are kept by name; under another spec those names hold other audio
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
        stamp.unlink()
    manifests = {}
    for split in SPLITS:
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        plans = [clip_plan(spec, split, i, t) for i, t in enumerate(texts[split])]

        def work(plan: dict, d: Path = d) -> None:
            _make_clip(plan, d / f"{plan['id']}.wav", spec)
            if on_progress:
                on_progress(1)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(work, plans))
        rows = [
            {
                "id": p["id"],
                "audio": f"{split}/{p['id']}.wav",
                "text": p["text"],
                "engine": p["engine"],
                "voice": p["voice"],
                "rate": p["rate"],
            }
            for p in plans
        ]
        if split == "test_unseen_speech" and spec.human_clips:
            rows += [{**r, "audio": f"{split}/{r['audio']}"} for r in _human_rows(d)]
        manifests[split] = atomic_write_text(
            out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    atomic_write_text(out / "corpus.json", json.dumps(asdict(spec), indent=2) + "\n")
    return Corpus(out, manifests)


def manifest_rows(path: str | Path) -> list[dict]:
    """The raw rows of a corpus manifest (with engine and voice, which :func:`load_manifest` drops)."""
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
