"""Rule-based parser: one LEVIR-CC caption (tokens) -> a structured ChangeSpec.

Example:
    >>> from edgecc.train.synth import parse_caption, merge_specs
    >>> spec = parse_caption("many houses are built along the road at the top".split())
    >>> spec.items[0].obj, spec.items[0].count, spec.items[0].action, spec.items[0].position, spec.items[0].relation
    ('house', 'many', 'add', 'top', 'along_road')
    >>> merge_specs([spec, spec, parse_caption("some houses appear".split())], changeflag=1).items[0].obj
    'house'

The grammar of LEVIR-CC captions is small: "<count> <object> <be> <action> <relation> <position> <context>",
joined by "and" / "with" / "replaced by" / "turns into". The parser finds object mentions (with the count words
in front of them), tells subjects from the places they are related to ("along the road", "on the bareland"),
and gives each subject the nearest action word of its clause. No-change templates give `changed=False`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

# Mask/class vocabulary. Index 0 is "no change"; mask pixels hold indices into this tuple.
CLASSES: tuple[str, ...] = (
    "none",
    "house",
    "building",
    "road",
    "tree",
    "grass",
    "parking_lot",
    "playground",
    "water",
    "pool",
    "bareland",
    "farmland",
)
# Land covers: they make a background (context) or a "turns into" target, never a counted object.
LAND_COVERS = ("bareland", "grass", "tree", "farmland", "water")
COUNTS = ("one", "two", "few", "several", "many", "row")
ACTIONS = ("add", "remove", "replace", "widen", "pave")
POSITIONS = ("top", "bottom", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right", "center")
RELATIONS = ("along_road", "both_sides", "beside", "around", "near", "in_area")


@dataclass(frozen=True)
class ChangeItem:
    """One changed object group: "<count> <obj> <action> [by replaced_by] [relation] [position]"."""

    obj: str
    count: str = "several"
    action: str = "add"
    replaced_by: str | None = None
    position: str | None = None
    relation: str | None = None


@dataclass(frozen=True)
class ChangeSpec:
    """What a caption (or the consensus of five) says changed.

    Attributes:
        changed: False for the no-change templates.
        items: the changed object groups, in caption order.
        context: background land covers named ("on the bareland" -> "bareland", "in the woods" -> "tree").
    """

    changed: bool = True
    items: tuple[ChangeItem, ...] = ()
    context: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        """True when the caption said something changed but nothing could be parsed."""
        return self.changed and not self.items


NO_CHANGE = ChangeSpec(changed=False)

# --- lexicon ---------------------------------------------------------------------------------------------------------
_OBJ_WORDS: dict[str, str] = {}
for _cls, _words in {
    "house": "house houses villa villas bungalow bungalows mansion mansions cottage cottages detached residence "
    "residences home homes hut huts cabin cabins ranch longhouse longhouses apartments settlements village "
    "residential",
    "building": "building buildings warehouse warehouses factory factories mall malls tower structure structures "
    "constructions construction containers container tank tanks storage room rooms complex complexes blocks block "
    "greenhouses facilities depots station stadium stadiums shed sheds platform platforms pavilion cistern gym",
    "road": "road roads street streets path paths lane lanes crossroad crossroads crossing crossings intersection "
    "intersections highway highways bypass bypasses trail trails roundabout viaduct viaducts overpass overpasses "
    "bridge bridges junction t-junction footpath flyover branch",
    "tree": "tree trees woods wood forest forests plants plant woodland woodlands vegetation bushes bush shrubs "
    "jungle brushwoods greenery",
    "grass": "grass grassland grasslands meadow meadows lawn pasture moorland grassy",
    "parking_lot": "parking cars car vehicles trucks buses square squares plaza",
    "playground": "playground playgrounds court courts track tracks stadium basketball tennis golf football baseball",
    "water": "pond ponds lake lakes river rivers reservoir reservoirs water puddle oasis",
    "pool": "pool pools",
    "bareland": "bareland barelands desert wasteland wastelands clearing ground land earth sand barren wilderness "
    "sundries foundation foundations",
    "farmland": "farmland farmlands field fields farm farms",
}.items():
    for _w in _words.split():
        _OBJ_WORDS.setdefault(_w, _cls)
# Two-word phrases, matched first: (first, second) -> class; the pair is consumed as one mention.
_PHRASES = {
    ("parking", "lot"): "parking_lot",
    ("parking", "lots"): "parking_lot",
    ("swimming", "pool"): "pool",
    ("swimming", "pools"): "pool",
    ("open", "space"): "bareland",
    ("open", "spaces"): "bareland",
    ("bare", "land"): "bareland",
    ("bare", "ground"): "bareland",
    ("empty", "land"): "bareland",
    ("vacant", "land"): "bareland",
    ("residential", "area"): "house",
    ("residential", "areas"): "house",
    ("construction", "site"): "building",
    ("construction", "sites"): "building",
    ("cement", "ground"): "parking_lot",
    ("concrete", "ground"): "parking_lot",
    ("cement", "square"): "parking_lot",
    ("concrete", "square"): "parking_lot",
    ("cement", "floor"): "parking_lot",
    ("green", "space"): "grass",
    ("green", "land"): "grass",
}

_COUNT_WORDS = {
    "a": "one", "an": "one", "one": "one", "single": "one", "another": "one", "the": None,
    "two": "two", "both": "two", "tow": "two", "pair": "two",
    "three": "few", "four": "few", "five": "few", "six": "several", "few": "few",
    "several": "several", "some": "several", "more": "several", "other": "several", "group": "several",
    "extra": "several", "additional": "several",
    "many": "many", "massive": "many", "lots": "many", "numerous": "many", "plenty": "many", "most": "many",
    "dense": "many", "densely": "many", "large": None, "all": "many", "much": "many", "number": "many",
    "row": "row", "rows": "row", "line": "row", "lines": "row", "neatly": "row", "neat": "row", "arranged": "row",
}  # fmt: skip

_ACTION_WORDS = {
    "add": "built build builds constructed construct appear appears appeared appearing emerge emerges emerged "
    "added erected developed develops located situated arranged planted grow grows grown growing rebuilt "
    "reconstructed completed new newly show shows shown lined stand stands set placed put stacked covered "
    "parked lusher greener denser thicker lush luxuriant increased increases risen rises more filled extended "
    "extends lengthened occur finished realized formed expanded expands restored renovated",
    "remove": "removed remove removes demolished disappear disappears disappeared disappearing vanished vanish "
    "vanishes cut cleared withered decreased decreases decrease reduced leveled flattened gone missing bulldozed "
    "knocked pulled thinned dried fewer fades disappearance taken sparse sparser",
    "replace": "replaced replace replaces replacing turned turns turn turning becomes become became transformed "
    "converted changed",
    "widen": "widened widens wider widen broadened enlarged",
    "pave": "paved hardened asphalt surfaced",
}
_ACTION_OF = {w: a for a, ws in _ACTION_WORDS.items() for w in ws.split()}
# A road/building "expanded"/"extended" is a widening or growth; the map above treats them as add, fixed below.
_ROAD_WIDEN = {"expanded", "expands", "extended", "extends", "lengthened", "enlarged", "broadened", "wider"}

_NO_CHANGE_PATTERNS = (
    "no difference", "no change", "seem identical", "seems identical", "are identical", "same as before",
    "nothing has changed", "nothing changed", "no changes", "not changed", "unchanged", "remains the same",
    "look the same", "looks the same", "stay the same", "no obvious", "nothing seems",
)  # fmt: skip

_RELATION_WORDS = {
    "along": "along_road", "alongside": "along_road", "roadside": "along_road", "roadsides": "along_road",
    "lining": "along_road", "lined": "along_road",
    "beside": "beside", "besides": "beside", "next": "beside", "by": "beside", "nearby": "near",
    "near": "near", "close": "near", "around": "around", "surrounded": "around", "surrounding": "around",
    "surround": "around", "among": "in_area", "between": "beside", "across": "along_road", "through": "along_road",
    "on": "in_area", "in": "in_area", "at": None, "into": None, "over": None,
}  # fmt: skip

_POS_V = {"top": "top", "upper": "top", "above": "top", "north": "top", "up": "top",
          "bottom": "bottom", "lower": "bottom", "below": "bottom", "south": "bottom", "down": "bottom"}
_POS_H = {"left": "left", "right": "right", "west": "left", "east": "right"}
_POS_C = {"center", "centre", "middle", "central"}
_COMPOUND_POS = re.compile(r"^(upper|lower|top|bottom)-(left|right)$")

_BE = {"is", "are", "was", "were", "be", "been", "has", "have", "had", "being", "get", "gets"}
# Clause breakers: a new subject usually follows them.
_BREAK = {"and", "while", "as", "but", "where", "which", "that", ",", "then", "also", "so"}


@dataclass
class _Mention:
    i: int  # token index of the (last) noun token
    j0: int  # first token index of the mention (count words included)
    obj: str
    word: str
    plural: bool
    count: str | None
    role: str = "subject"  # "subject" | "place" (after a relation/preposition) | "target" (replaced by X)
    relation: str | None = None


def _is_no_change(text: str) -> bool:
    return any(p in text for p in _NO_CHANGE_PATTERNS)


def _find_mentions(toks: Sequence[str]) -> list[_Mention]:
    out: list[_Mention] = []
    n = len(toks)
    i = 0
    while i < n:
        w = toks[i]
        obj = None
        last = i
        if i + 1 < n and (w, toks[i + 1]) in _PHRASES:
            obj, last = _PHRASES[(w, toks[i + 1])], i + 1
        elif w in _OBJ_WORDS:
            obj = _OBJ_WORDS[w]
            # "residential" alone is an adjective ("residential buildings"): let the noun decide.
            if w in {"residential", "construction", "parking", "storage", "basketball", "tennis", "golf", "football",
                     "baseball", "branch"} and i + 1 < n and toks[i + 1] in _OBJ_WORDS:
                i += 1
                continue
            if w == "branch" and not out:
                obj = "road"
        if obj is None:
            i += 1
            continue
        noun = toks[last]
        plural = noun.endswith("s") and noun not in {"grass", "bus", "bypass", "cross", "woods", "lots"}
        if noun in {"woods", "vegetation", "plants", "forest", "houses", "buildings", "villas", "lots"}:
            plural = True
        # Count: scan back over adjectives (at most 4 tokens) for a count word.
        count = None
        j0 = i
        for k in range(i - 1, max(-1, i - 5), -1):
            t = toks[k]
            if t in _BE or t in _BREAK or t in _RELATION_WORDS or t in _ACTION_OF and t not in {"new", "more"}:
                break
            if t in _OBJ_WORDS and t not in {"residential", "construction", "storage"}:
                break
            if t in {"side", "sides", "corner", "part", "edge", "end", "half", "area", "of"} and t != "of" or \
                    t == "of" and k - 1 >= 0 and toks[k - 1] in {"side", "sides", "corner", "part", "edge", "end"}:
                break
            j0 = k
            c = _COUNT_WORDS.get(t, "")
            if c is None or c == "":
                continue
            if t in {"two", "tow", "both"} and k + 1 < n and toks[k + 1] in {"rows", "lines", "row"}:
                count = "row"
                break
            if count is None or count == "one" and c != "one":
                count = c
        if count is None and plural:
            count = "several"
        elif count is None:
            count = "one"
        out.append(_Mention(last, j0, obj, noun, plural, count))
        i = last + 1
    return out


def _position(toks: Sequence[str], lo: int, hi: int) -> str | None:
    """Image position named in toks[lo:hi] ('top', 'bottom-left', 'center', ...), or None."""
    v = h = None
    c = False
    for t in toks[lo:hi]:
        m = _COMPOUND_POS.match(t)
        if m:
            v, h = _POS_V[m.group(1)], m.group(2)
        elif t in _POS_V and v is None:
            v = _POS_V[t]
        elif t in _POS_H and h is None:
            h = _POS_H[t]
        elif t in _POS_C:
            c = True
    if v and h:
        return f"{v}-{h}"
    return v or h or ("center" if c else None)


def parse_caption(tokens: Sequence[str]) -> ChangeSpec:
    """Parse one caption's tokens into a ChangeSpec (spec.empty is True when nothing was understood).

    Args:
        tokens: lower-case word tokens, e.g. ["many", "houses", "are", "built", "along", "the", "road"].
    """
    toks = [t.lower() for t in tokens if t not in {".", ""}]
    text = " ".join(toks)
    if _is_no_change(text) or text in {"almost nothing has changed", "the scene is the same as before"}:
        return NO_CHANGE
    mentions = _find_mentions(toks)
    n = len(toks)
    # Roles: a mention preceded by a relation word / preposition (within 3 tokens, nothing but articles/adjectives
    # between) is a place, not a subject: "along the road", "on the bareland", "in the woods", "beside them".
    for m in mentions:
        for k in range(m.j0 - 1, max(-1, m.j0 - 4), -1):
            t = toks[k]
            if t in {"the", "a", "an", "this", "its", "their", "of", "to", "two", "both", "one", "original", "main",
                     "existing", "old", "former", "newly", "new", "built", "large", "big", "small", "sides", "side",
                     "either", "each", "that", "those", "these", "other"}:
                if t in {"sides", "side"} and k - 1 >= 0 and toks[k - 1] in {"both", "two", "either", "sides"}:
                    m.role, m.relation = "place", "both_sides"
                continue
            if t in {"by", "with"} and k - 1 >= 0 and toks[k - 1] in {"replaced", "surrounded", "covered", "filled"}:
                if toks[k - 1] == "replaced":
                    m.role = "target"
                else:
                    m.role, m.relation = "place", "around"
                break
            if t in {"into", "to", "by"} and k - 1 >= 0 and toks[k - 1] in _ACTION_OF and \
                    _ACTION_OF[toks[k - 1]] == "replace":
                m.role = "target"
                break
            if t in {"replace", "replaces", "replacing"}:
                m.role = "replaced"
                break
            if t in {"becomes", "become", "became"}:
                m.role = "target"
                break
            if t in _RELATION_WORDS:
                rel = _RELATION_WORDS[t]
                if m.role != "place" or m.relation is None:
                    m.role, m.relation = "place", rel or "in_area"
                break
            break
    subjects = [m for m in mentions if m.role in {"subject", "target", "replaced"}]
    items: list[ChangeItem] = []
    context: list[str] = []
    places = [m for m in mentions if m.role == "place"]
    for m in places:
        if m.obj in LAND_COVERS and m.relation in {"in_area", "around", None} and m.obj not in context:
            context.append(m.obj)
    # Each subject's clause: from its mention to the next subject mention (or the end).
    starts = [m.j0 for m in subjects] + [n]
    verbless: list[bool] = []
    used: list[_Mention] = []  # the subject of each item
    for si, m in enumerate(subjects):
        lo, hi = m.i + 1, starts[si + 1]
        action = None
        # "replaced by X" / "turns into X": the subject is replaced; the target is added.
        for k in range(lo, hi):
            a = _ACTION_OF.get(toks[k])
            if a is None:
                continue
            if toks[k] in {"more", "new", "newly"}:
                continue
            action = a
            if m.obj == "road" and toks[k] in _ROAD_WIDEN:
                action = "widen"
            break
        shares_verb = action is None
        if action is None:
            # No verb in the clause: the verb is shared with what follows ("houses and roads appear", "a road with
            # villas built along appears"), else it came before ("there appear some houses", "replace the plants").
            for k in range(hi, n):
                a = _ACTION_OF.get(toks[k])
                if a is not None and toks[k] not in {"more", "new", "newly"}:
                    action = a
                    break
        if action is None:
            prev_lo = subjects[si - 1].i + 1 if si else 0
            for k in range(m.j0 - 1, prev_lo - 1, -1):
                a = _ACTION_OF.get(toks[k])
                if a is not None:
                    action = a
                    break
        if m.role == "target":
            action = "add"
        elif m.role == "replaced":
            action = "replace"
        if action is None:
            action = "add"
        if action == "remove" and m.obj == "bareland":  # "the bareland disappears" = something covers it.
            continue
        rel = None
        pos = _position(toks, lo, hi)
        if pos is None and si == 0:
            pos = _position(toks, 0, m.j0)
        for p in places:
            if not (lo <= p.j0 < hi + 1 and p.relation):
                continue
            if p.relation == "both_sides":
                rel = "both_sides"
            elif p.obj == "road":
                rel = rel or ("near" if p.relation == "near" else "along_road")
            elif p.obj in LAND_COVERS:
                continue  # "across the forest", "on the bareland": context, not a relation
            elif rel is None:
                rel = "beside" if p.relation in {"along_road", "in_area"} else p.relation
        if rel is None and any(t in {"both", "either"} for t in toks[lo:hi]) and "sides" in toks[lo:hi]:
            rel = "both_sides"
        if rel is None and "roadside" in toks[lo:hi]:
            rel = "along_road"
        count = m.count or "several"
        if m.obj in LAND_COVERS and count in {"one", "two"} and not m.plural:
            count = "one" if m.word not in {"trees", "plants"} else count
        items.append(ChangeItem(m.obj, count, action, None, pos, rel))
        verbless.append(shares_verb)
        used.append(m)
    # "houses and trees appear along the road": a verbless subject shares the next one's place.
    for k in range(len(items) - 2, -1, -1):
        if verbless[k] and items[k].action == items[k + 1].action:
            items[k] = replace(items[k], position=items[k].position or items[k + 1].position,
                               relation=items[k].relation or items[k + 1].relation)
    # Link replace pairs: "X replaced by Y", "X turns into Y", "Y replace X".
    items = _link_replacements(items, used)
    items = _dedupe(items)
    return ChangeSpec(changed=True, items=tuple(items), context=tuple(context))


def _link_replacements(items: list[ChangeItem], subjects: list[_Mention]) -> list[ChangeItem]:
    out = list(items)
    for idx, (it, m) in enumerate(zip(items, subjects, strict=True)):
        if it.action == "replace" and m.role != "replaced":
            # "X replaced by Y" / "X turns into Y": Y is the next target mention.
            later = zip(items[idx + 1:], subjects[idx + 1:], strict=True)
            tgt = next((o for o, s in later if s.role == "target"), None)
            if tgt is not None:
                out[idx] = replace(it, replaced_by=tgt.obj, position=it.position or tgt.position)
            else:
                out[idx] = replace(it, action="remove")
        elif m.role == "replaced":
            # "Y replace X": Y is the previous subject.
            src = items[idx - 1].obj if idx else None
            out[idx] = replace(it, action="replace" if src else "remove", replaced_by=src)
            if idx and items[idx - 1].action == "replace":
                out[idx - 1] = replace(items[idx - 1], action="add")
    # A land-cover target only re-textures the replaced object's place: keep it as replaced_by only.
    res = []
    for it, m in zip(out, subjects, strict=True):
        if m.role == "target" and it.obj in {"bareland"}:
            continue
        res.append(it)
    return res


def _dedupe(items: Iterable[ChangeItem]) -> list[ChangeItem]:
    seen: dict[tuple[str, str], ChangeItem] = {}
    for it in items:
        key = (it.obj, it.action)
        if key not in seen:
            seen[key] = it
        else:
            old = seen[key]
            seen[key] = replace(old, position=old.position or it.position, relation=old.relation or it.relation,
                                replaced_by=old.replaced_by or it.replaced_by,
                                count=_bigger(old.count, it.count))
    return list(seen.values())


_COUNT_RANK = {"one": 0, "two": 1, "few": 2, "several": 3, "row": 4, "many": 5}


def _bigger(a: str, b: str) -> str:
    return a if _COUNT_RANK.get(a, 3) >= _COUNT_RANK.get(b, 3) else b


def _majority(values: Iterable[str | None]) -> str | None:
    c = Counter(v for v in values if v is not None)
    if not c:
        return None
    best = max(c.values())
    return next(v for v, k in c.items() if k == best)  # first-seen among the ties: stable


def merge_specs(specs: Sequence[ChangeSpec], changeflag: int | None = None) -> ChangeSpec:
    """Consensus of several captions' specs (normally the five of one pair).

    Items whose (obj, action) is named by >= 2 captions are kept, with majority count/position/relation; when
    no item reaches two votes, the most informative single spec is used. `changeflag` (0/1, from the dataset)
    overrides the captions on whether anything changed.

    Args:
        specs: one ChangeSpec per caption.
        changeflag: the dataset's change flag; None to decide by the captions (majority).
    """
    specs = list(specs)
    if changeflag is None:
        changed = sum(s.changed for s in specs) * 2 > len(specs)
    else:
        changed = bool(changeflag)
    if not changed:
        return NO_CHANGE
    specs = [s for s in specs if s.changed and not s.empty]
    if not specs:
        return ChangeSpec(changed=True)
    groups: dict[tuple[str, str], list[ChangeItem]] = {}
    for s in specs:
        for it in s.items:
            groups.setdefault((it.obj, it.action), []).append(it)
    kept = [(k, v) for k, v in groups.items() if len(v) >= 2]
    # Contradictions: add vs remove of the same object: keep the side with more votes (ties: keep both).
    votes = {k: len(v) for k, v in kept}
    kept = [(k, v) for k, v in kept
            if not (k[1] == "add" and votes.get((k[0], "remove"), 0) > len(v))
            and not (k[1] == "remove" and votes.get((k[0], "add"), 0) > len(v))]
    if kept:
        items = []
        for (obj, action), its in kept:
            counts = Counter(i.count for i in its)
            count = max(counts, key=lambda c: (counts[c], _COUNT_RANK.get(c, 0)))
            items.append(ChangeItem(obj, count, action, _majority(i.replaced_by for i in its),
                                    _majority(i.position for i in its), _majority(i.relation for i in its)))
        items.sort(key=lambda i: -len(groups[(i.obj, i.action)]))
    else:
        best = max(specs, key=lambda s: (len(s.items), sum(bool(i.position) + bool(i.relation) for i in s.items)))
        items = list(best.items)
    ctx = Counter(c for s in specs for c in s.context)
    context = tuple(c for c, k in ctx.most_common() if k >= 2) or tuple(c for c, _ in ctx.most_common(1))
    return ChangeSpec(changed=True, items=tuple(items), context=context)
