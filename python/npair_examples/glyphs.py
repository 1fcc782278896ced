"""Render CJK ideographs from Debian's font faces as an image-list dataset for
metric learning: one class per character, one image per face.

The metric-learning protocol: the net trains on most characters and is judged on
characters it never saw ("unseen"), by retrieval of their images across faces.
The faces come from a table (file, face index, name, Debian package; default
the one beside this module); which of them are used is measured here, not
assumed:

  1. a face is dropped when its character map has fewer than --min-characters
     of the CJK Unified Ideographs (a Korean face's hanja or a Japanese face's
     kanji count) or when it renders most of them as empty glyphs;
  2. a face whose renders agree with an earlier kept face's above --clone
     cosine on average (HK/TW variants of one design, proportional twins) is
     dropped as a near-clone;
  3. the classes are the characters that every kept face maps and renders
     non-empty.

Each image is the character's ink, fitted into a --size box with a small random
rotation, scale and shift (seeded per character and face: deterministic).

Writes into --out, the format a CUB-200 or Stanford Online Products user has:
  images/<codepoint>/<face>.png   8-bit grayscale, white ink on black
  train.txt, unseen.txt           `path label` lists, paths relative to --out
                                  (the root_folder); labels 0..C_train-1 for the
                                  training characters, unseen ones after them
  classes.tsv                     label, codepoint, character, split
  faces.tsv                       every face of the table: kept, or why not
  meta.json                       the inputs, the counts and the cache key
A folder whose meta.json has the same cache key (the table, the font files,
the options and this module) is reused as it is.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np

from npair_loss.cli import ArgumentParser, UsageError, run

FACES_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                           "glyph_faces.tsv")
FONT_DIR = "/usr/share/fonts"
CJK_UNIFIED = (0x4E00, 0x9FFF)
# Rendered this large, then cropped to the ink and scaled down: the faces' own
# metrics (proportional or monospaced advance, ascent) do not move the glyph.
_RENDER_PX = 96


def read_faces(path, font_dir=FONT_DIR):
    """[{"file", "face", "name", "package"}] from a faces table (tab-separated,
    '#' comments)."""
    faces = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise UsageError("%s: cannot read the faces table (%s)" % (path, e.strerror))
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 4 or not cols[1].isdigit():
            raise UsageError("%s:%d: expected `file<TAB>face<TAB>name<TAB>package`, got %r"
                             % (path, number, line))
        faces.append(dict(file=os.path.join(font_dir, cols[0]), face=int(cols[1]),
                          name=cols[2], package=cols[3]))
    if not faces:
        raise UsageError("%s: no faces in the table" % path)
    names = [f["name"] for f in faces]
    if len(set(names)) != len(names):
        raise UsageError("%s: face names repeat" % path)
    return faces


def mapped_characters(face, lo=CJK_UNIFIED[0], hi=CJK_UNIFIED[1]):
    """The code points in [lo, hi] that the face's character map has."""
    from fontTools.ttLib import TTFont
    font = TTFont(face["file"], fontNumber=face["face"], lazy=True)
    return {c for c in font.getBestCmap() if lo <= c <= hi}


class Renderer:
    """One face's glyphs as size x size uint8 images."""

    def __init__(self, face, size, fill=0.85):
        from PIL import ImageFont
        self.font = ImageFont.truetype(face["file"], int(_RENDER_PX * 0.66), index=face["face"])
        self.size = size
        self.box = fill * size

    def ink(self, char):
        """The glyph cropped to its ink (a PIL image), or None for an empty glyph."""
        from PIL import Image, ImageDraw
        canvas = Image.new("L", (_RENDER_PX, _RENDER_PX), 0)
        ImageDraw.Draw(canvas).text((_RENDER_PX / 2, _RENDER_PX / 2), char, fill=255,
                                    font=self.font, anchor="mm")
        box = canvas.getbbox()
        return None if box is None else canvas.crop(box)

    def render(self, ink, rng=None, rotate=6.0, scale=(0.85, 1.0), shift=2.0):
        """The ink fitted into the box, centred; with rng, a random rotation (degrees),
        scale (of the box) and shift (pixels)."""
        from PIL import Image
        w, h = ink.size
        s = self.box / max(w, h)
        angle, dx, dy = 0.0, 0.0, 0.0
        if rng is not None:
            s *= rng.uniform(*scale)
            angle = rng.uniform(-rotate, rotate)
            dx, dy = rng.uniform(-shift, shift, size=2)
        g = ink.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        if angle:
            g = g.rotate(angle, resample=Image.BILINEAR, expand=True)
        out = Image.new("L", (self.size, self.size), 0)
        out.paste(g, (int(round((self.size - g.size[0]) / 2 + dx)),
                      int(round((self.size - g.size[1]) / 2 + dy))))
        return out


def _unit(images):
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def choose_faces(faces, candidates, clone=0.92, min_characters=1000, probe=200, seed=0,
                 size=32):
    """(kept faces, {name: why dropped}, {name: mapped and non-empty code points}).
    Near-clones are judged on `probe` characters that every surviving face has."""
    dropped, present = {}, {}
    for face in faces:
        if not os.path.exists(face["file"]):
            dropped[face["name"]] = "font file missing (apt package %s)" % face["package"]
            continue
        present[face["name"]] = mapped_characters(face) & candidates
    alive = [f for f in faces if len(present.get(f["name"], ())) >= min_characters]
    for f in faces:
        if f["name"] in present and f not in alive:
            dropped[f["name"]] = "maps only %d ideographs" % len(present[f["name"]])
    if not alive:
        return [], dropped, present
    common = sorted(set.intersection(*[present[f["name"]] for f in alive]))
    rng = np.random.default_rng(seed)
    sample = [chr(c) for c in rng.choice(common, min(probe, len(common)), replace=False)]
    renders, kept = {}, []
    for face in alive:
        r = Renderer(face, size)
        inks = [r.ink(ch) for ch in sample]
        empty = sum(ink is None for ink in inks)
        if empty > len(sample) / 2:
            dropped[face["name"]] = "renders %d of %d sampled characters empty" % (
                empty, len(sample))
            continue
        renders[face["name"]] = _unit([np.zeros((size, size)) if ink is None else
                                       np.asarray(r.render(ink)) for ink in inks])
        twin = next((k["name"] for k in kept if float(
            (renders[k["name"]] * renders[face["name"]]).sum(axis=1).mean()) > clone), None)
        if twin:
            dropped[face["name"]] = "near-clone of %s (mean cosine > %g)" % (twin, clone)
        else:
            kept.append(face)
    return kept, dropped, present


def _progress(total, desc):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="img", disable=None)
    except ImportError:
        return None


def render_dataset(kept, chars, out, size, seed):
    """{(code point, face name): relative path} of the rendered images; drops from
    `chars` (in place) any character some face renders empty."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    bar = _progress(len(chars) * len(kept), "glyphs: rendering")
    paths, empty = {}, set()
    for fi, face in enumerate(kept):
        r = Renderer(face, size)
        for cp in chars:
            ink = r.ink(chr(cp))
            if bar is not None:
                bar.update()
            if ink is None:
                empty.add(cp)
                continue
            rng = np.random.default_rng([seed, cp, fi])
            rel = os.path.join("images", "%04X" % cp, face["name"] + ".png")
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            r.render(ink, rng).save(os.path.join(out, rel))
            paths[cp, face["name"]] = rel
    if bar is not None:
        bar.close()
    chars[:] = [c for c in chars if c not in empty]
    return paths


def cache_key(table, faces, args):
    """A digest of everything the output depends on."""
    h = hashlib.sha256()
    for path in [os.path.abspath(__file__), table] + sorted({f["file"] for f in faces}):
        h.update(path.encode())
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    h.update(json.dumps({k: getattr(args, k) for k in
                         ("size", "unseen", "characters", "seed", "clone",
                                     "min_characters")},
                        sort_keys=True).encode())
    return h.hexdigest()


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.glyphs",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example (what scripts/run_example.sh runs):\n"
               "  python -m npair_examples.glyphs --out runs/glyphs/data\n"
               "  caffe train --solver=models/glyphs/npair_solver.prototxt")
    p.add_argument("--out", default="runs/glyphs/data",
                   help="output folder (default: runs/glyphs/data, which "
                        "models/glyphs/*.prototxt read)")
    p.add_argument("--faces", default=FACES_TABLE, help="faces table (default: %(default)s)")
    p.add_argument("--font-dir", default=FONT_DIR,
                   help="where the table's files are (default: %(default)s)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32)")
    p.add_argument("--unseen", type=int, default=500,
                   help="characters held out from training (default: 500)")
    p.add_argument("--characters", type=int, default=0,
                   help="use only this many characters, a seeded choice (default: all "
                        "that every kept face has)")
    p.add_argument("--clone", type=float, default=0.92,
                   help="mean render cosine above which a face is a near-clone of an "
                        "earlier one (default: 0.92)")
    p.add_argument("--min-characters", type=int, default=1000,
                   help="fewest ideographs a face must map to be used (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true", help="render even if --out is current")
    return p


def _write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(c) for c in row) + "\n")


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.size < 8:
        raise UsageError("--size must be at least 8, got %d" % args.size)
    if not 0 < args.clone <= 1:
        raise UsageError("--clone must be in (0, 1], got %g" % args.clone)
    faces = read_faces(args.faces, args.font_dir)
    key = cache_key(args.faces, faces, args)
    meta_path = os.path.join(args.out, "meta.json")
    if not args.force and os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f).get("cache_key") == key:
                print("glyphs: %s is current (same faces, fonts, options and code): reused"
                      % args.out)
                return 0
    candidates = set(range(CJK_UNIFIED[0], CJK_UNIFIED[1] + 1))
    print("glyphs: checking %d faces of %s" % (len(faces), args.faces), flush=True)
    kept, dropped, present = choose_faces(faces, candidates, args.clone, args.min_characters,
                                          seed=args.seed, size=args.size)
    if len(kept) < 2:
        raise UsageError("fewer than 2 usable faces (%s); install the table's packages "
                         "(scripts/install_deps.sh does)" % "; ".join(
                             "%s: %s" % kv for kv in dropped.items()))
    chars = sorted(set.intersection(*[present[f["name"]] for f in kept]))
    rng = np.random.default_rng(args.seed)
    if args.characters:
        chars = sorted(rng.choice(chars, min(args.characters, len(chars)), replace=False))
    chars = [int(c) for c in chars]
    # Checked before anything is removed or rendered.
    if args.unseen >= len(chars) - 1 or args.unseen < 1:
        raise UsageError("--unseen %d leaves no training classes among %d characters"
                         % (args.unseen, len(chars)))
    if os.path.isdir(args.out) and os.listdir(args.out):
        # Only ever remove a folder this tool wrote.
        if not os.path.exists(meta_path):
            raise UsageError("%s is not empty and holds no meta.json of this tool: "
                             "give an empty or new --out" % args.out)
        shutil.rmtree(args.out)
    os.makedirs(args.out, exist_ok=True)
    print("glyphs: %d faces kept, %d dropped; %d characters in every kept face"
          % (len(kept), len(dropped), len(chars)), flush=True)
    paths = render_dataset(kept, chars, args.out, args.size, args.seed)
    unseen = set(rng.choice(chars, args.unseen, replace=False).tolist())
    train_chars = [c for c in chars if c not in unseen]
    ordered = train_chars + sorted(unseen)
    label = {cp: i for i, cp in enumerate(ordered)}
    for split, members in (("train", train_chars), ("unseen", sorted(unseen))):
        with open(os.path.join(args.out, split + ".txt"), "w") as f:
            for cp in members:
                for face in kept:
                    f.write("%s %d\n" % (paths[cp, face["name"]], label[cp]))
    _write_tsv(os.path.join(args.out, "classes.tsv"), ("label", "codepoint", "char", "split"),
               [(label[cp], "U+%04X" % cp, chr(cp), "unseen" if cp in unseen else "train")
                for cp in ordered])
    _write_tsv(os.path.join(args.out, "faces.tsv"), ("name", "package", "file", "face", "use"),
               [(f["name"], f["package"], f["file"], f["face"],
                 dropped.get(f["name"], "kept")) for f in faces])
    meta = dict(cache_key=key, faces_table=args.faces, size=args.size, seed=args.seed,
                clone=args.clone, min_characters=args.min_characters, faces=[f["name"] for f in kept],
                dropped=dropped, characters=len(chars), train_classes=len(train_chars),
                unseen_classes=len(unseen), images_per_class=len(kept),
                train_images=len(train_chars) * len(kept),
                unseen_images=len(unseen) * len(kept))
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    for name, why in dropped.items():
        print("  dropped %-18s %s" % (name, why))
    print("glyphs: %d train classes (%d images), %d unseen (%d images), %d faces each -> %s"
          % (len(train_chars), meta["train_images"], len(unseen), meta["unseen_images"],
             len(kept), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.glyphs"))
