"""Caffe image lists (`path label` per line), read by the rules of Caffe's data layers.

The one reader of image lists in this repository: every tool that takes a list reads
it here, so that a list means to a tool what it means to `caffe train`. The rules are
those of NPairImageData (ParseListLine in src/caffe/layers/npair_image_data_layer.cpp),
which are ImageData's on every line ImageData reads correctly:

  - a line ends at "\\n"; spaces, tabs and "\\r" at its end are dropped (a list written
    on Windows reads the same), and a line left empty is skipped (but counted, so that
    line numbers are the file's);
  - the label is the text after the line's last space: an integer (optional sign,
    digits) within 32 bits, nothing else;
  - the path is everything before that space, spaces and leading blanks included;
    it may not be empty;
  - the file an entry names is root_folder + path, concatenated as Caffe does:
    root_folder "images/" and path "a.jpg" name "images/a.jpg", and root_folder
    "images" names "imagesa.jpg".

ImageData itself checks nothing (a line without a label reads as label 0); this
reader, like NPairImageData, stops at such a line, naming the file and the line.
"""

import re
from typing import NamedTuple

import numpy as np

from npair_loss.cli import UsageError

# What strtol accepts and NPairImageData keeps: the whitespace strtol skips, a sign,
# decimal digits, and nothing after them.
_LABEL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")
_INT32 = (-2 ** 31, 2 ** 31 - 1)


class ListImage(NamedTuple):
    path: str    # root_folder + the list's path
    label: int
    line: int    # 1-based, for messages


def parse_line(text):
    """(path, label) of one list line (its end of line removed), None for a line
    that holds nothing; ValueError for a malformed one."""
    text = text.rstrip(" \t\r")
    if not text:
        return None
    space = text.rfind(" ")
    label = text[space + 1:]
    if space <= 0 or not _LABEL.fullmatch(label) or not \
            _INT32[0] <= int(label) <= _INT32[1]:
        raise ValueError("expected 'path label' with an integer label, got %r" % text)
    return text[:space], int(label)


def read_list(path, root_folder=""):
    """The images of the list at `path`, as ListImages in list order; a malformed line,
    or a list without images, is a UsageError naming the file (and the line)."""
    images = []
    # newline="\n": lines end where Caffe's std::getline ends them; surrogateescape
    # keeps a path's bytes whatever its encoding.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for number, line in enumerate(f, 1):
            try:
                entry = parse_line(line.rstrip("\n"))
            except ValueError as e:
                raise UsageError("%s:%d: %s" % (path, number, e)) from None
            if entry is not None:
                images.append(ListImage(root_folder + entry[0], entry[1], number))
    if not images:
        raise UsageError("%s: the list names no image" % path)
    return images


def labels_of(images):
    """The labels of a read list, as an int64 array."""
    return np.array([image.label for image in images], dtype=np.int64)


def load_images(path, root_folder="", scale=1 / 255.0):
    """(x, labels): the list's images as float32 N x C x H x W times `scale` (the nets'
    transform_param), in list order; grayscale images have C = 1."""
    from PIL import Image
    images = read_list(path, root_folder)
    pixels = []
    for image in images:
        try:
            with Image.open(image.path) as im:
                array = np.asarray(im, dtype=np.float32)
        except OSError as e:
            raise UsageError("%s:%d: cannot read %r as an image (%s)" % (
                path, image.line, image.path, e.strerror or e)) from None
        pixels.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise UsageError("%s: the images differ in size (%s)" % (path, sorted(shapes)[:3]))
    return np.stack(pixels) * np.float32(scale), labels_of(images)
