import itertools, sys, warnings
warnings.filterwarnings("ignore")
from music21 import converter
from culturesim_ray.demo import essen_tunes
from culturesim_ray.encoders.music import parse_events
def old(text):
    score = converter.parse(text, format="abc")
    ev = []
    for el in score.flatten().notesAndRests:
        ql = float(el.quarterLength)
        if ql <= 0: continue
        if el.isRest: ev.append((None, ql))
        elif el.isChord: ev.append((max(p.midi for p in el.pitches), ql))
        else: ev.append((el.pitch.midi, ql))
    return ev
n = diff = 0
for i, t in enumerate(essen_tunes()):
    if i % 4: continue
    try:
        a = old(t["abc"])
    except Exception as e:
        a = "ERR"
    try:
        b = parse_events(t["abc"], "x.abc")
    except Exception as e:
        b = "ERR"
    n += 1
    if a != b:
        diff += 1
        if diff <= 5: print("DIFF", t["item_id"], str(a)[:200], str(b)[:200])
print("tunes", n, "differ", diff)
