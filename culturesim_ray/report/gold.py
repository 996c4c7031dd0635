"""Gold pairs (expert-judgement stand-ins) derived from real data, and the
culture attributes reports colour maps by. Pure: no ray.

The demo gold set is not hand-scored. Each demo culture is tied to a modern
country, and every pair's score is computed from the `countryinfo` package's
country records (borders as ISO 3166 alpha-3 codes, capital coordinates, UN
geoscheme region and subregion):

    score = ( shared_border + same_subregion + exp(-capital_distance_km / 2000) ) / 3

shared_border and same_subregion are 0/1; the distance is the great-circle
distance between the capitals (haversine, R = 6371 km). The result is in
[0, 1]: neighbours in one subregion score near 1 (Spain-Italy share a
subregion; Germany-France share a border and a subregion), distant cultures
near 0 (Spain-Japan). `build_demo_gold()` regenerates the shipped file
`culturesim_ray/data/gold/demo_gold.csv` exactly (a test checks it), so the
provenance can be re-derived rather than trusted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

# demo culture -> the country whose record stands for it (see culturesim_ray.demo)
DEMO_COUNTRIES: dict[str, str] = {
    "Turkish": "Turkey", "Greek": "Greece", "Persian": "Iran", "Egyptian": "Egypt",
    "Indian": "India", "Chinese": "China", "Japanese": "Japan", "German": "Germany",
    "French": "France", "Spanish": "Spain", "Italian": "Italy", "Russian": "Russia",
}
DISTANCE_SCALE_KM = 2000.0
EARTH_RADIUS_KM = 6371.0
GOLD_FIELDS = ["culture_a", "culture_b", "score", "shared_border", "same_subregion",
               "capital_distance_km"]


def country_facts(countries: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """culture -> iso3, borders, capital (lat, lng), region, subregion (countryinfo)."""
    from countryinfo import CountryInfo

    facts = {}
    for culture, country in countries.items():
        info = CountryInfo(country).info()
        facts[culture] = {"country": info["name"], "iso3": info["ISO"]["alpha3"],
                          "borders": set(info.get("borders") or []),
                          "capital": tuple(info["capital_latlng"]),
                          "region": info["region"], "subregion": info["subregion"]}
    return facts


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def derive_gold(countries: Mapping[str, str] = DEMO_COUNTRIES,
                scale_km: float = DISTANCE_SCALE_KM) -> list[dict[str, Any]]:
    """One row per unordered culture pair (culture_a < culture_b), with its parts."""
    facts = country_facts(countries)
    names = sorted(facts)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            fa, fb = facts[a], facts[b]
            border = int(fb["iso3"] in fa["borders"] or fa["iso3"] in fb["borders"])
            sub = int(fa["subregion"] == fb["subregion"])
            dist = haversine_km(fa["capital"], fb["capital"])
            score = (border + sub + math.exp(-dist / scale_km)) / 3
            rows.append({"culture_a": a, "culture_b": b, "score": round(score, 6),
                         "shared_border": border, "same_subregion": sub,
                         "capital_distance_km": round(dist, 1)})
    return rows


def write_gold(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=GOLD_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in GOLD_FIELDS})
    return path


def build_demo_gold(path: str | Path) -> Path:
    return write_gold(derive_gold(), path)


def demo_gold_path() -> Path:
    return Path(str(resources.files("culturesim_ray") / "data" / "gold" / "demo_gold.csv"))


def culture_attributes(countries: Mapping[str, str] = DEMO_COUNTRIES) -> list[dict[str, str]]:
    """culture, country, region, subregion: what the report's maps are coloured by."""
    return [{"culture": c, "country": f["country"], "region": f["region"],
             "subregion": f["subregion"]} for c, f in sorted(country_facts(countries).items())]
