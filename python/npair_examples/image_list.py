"""Caffe image lists (`relative/path label` per line, what ImageData and
NPairImageData read) loaded as arrays for pycaffe."""

import os

import numpy as np

from npair_loss.cli import UsageError


def read_list(path):
    """(paths, labels) of an image list; a malformed line is a UsageError naming it."""
    paths, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            name, _, label = line.rstrip("\n").rpartition(" ")
            try:
                labels.append(int(label))
            except ValueError:
                raise UsageError("%s:%d: expected `path label`, got %r"
                                 % (path, number, line.rstrip("\n"))) from None
            if not name:
                raise UsageError("%s:%d: expected `path label`, got %r"
                                 % (path, number, line.rstrip("\n")))
            paths.append(name)
    if not paths:
        raise UsageError("%s: no images in the list" % path)
    return paths, np.array(labels, dtype=np.int64)


def load_images(path, root="", scale=1 / 255.0):
    """(x, labels): the list's images as float32 N x C x H x W times `scale` (the nets'
    transform_param), in list order; grayscale images have C = 1."""
    from PIL import Image
    paths, labels = read_list(path)
    images = []
    for p in paths:
        im = np.asarray(Image.open(os.path.join(root, p)), dtype=np.float32)
        images.append(im[None] if im.ndim == 2 else im.transpose(2, 0, 1))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UsageError("%s: the images differ in size (%s)" % (path, sorted(shapes)[:3]))
    return np.stack(images) * np.float32(scale), labels
