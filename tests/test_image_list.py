"""The one image-list reader (npair_examples.image_list) reads a list as Caffe's data
layers do: its rules, its errors (file and line), and the same images and labels as
NPairImageData on a list with every rule in it."""
import numpy as np
import pytest

from npair_examples.image_list import labels_of, load_images, parse_line, read_list
from npair_loss.cli import UsageError


@pytest.mark.parametrize('text, entry', [
    ('a.jpg 3', ('a.jpg', 3)),
    ('dir with spaces/a b.jpg 3', ('dir with spaces/a b.jpg', 3)),  # the last space
    (' lead.jpg 3', (' lead.jpg', 3)),           # a leading blank is part of the path
    ('a.jpg 3 \t\r', ('a.jpg', 3)),              # trailing blanks and a Windows "\r"
    ('a.jpg  3', ('a.jpg ', 3)),                 # two spaces: the path keeps one
    ('a.jpg \t3', ('a.jpg', 3)),                 # strtol skips the tab before the label
    ('a.jpg\t3 4', ('a.jpg\t3', 4)),             # a tab does not separate
    ('a.jpg +3', ('a.jpg', 3)),
    ('a.jpg -2147483648', ('a.jpg', -2 ** 31)),
    ('a.jpg 2147483647', ('a.jpg', 2 ** 31 - 1)),
    ('', None), (' \t\r', None),
])
def test_line_rules(text, entry):
    assert parse_line(text) == entry


# The lines NPairImageData's gtest (TestMalformedLines) stops at, and a few more.
@pytest.mark.parametrize('text', [
    'a.jpg', 'a.jpg x', 'a.jpg 1.5', 'a.jpg 99999999999', 'a.jpg 2147483648', ' 1', '7',
    'a.jpg 3x', 'a.jpg 0x10', 'a.jpg ٣', 'a.jpg 1_000', 'a.jpg\t3',
])
def test_malformed_lines(text):
    with pytest.raises(ValueError, match="expected 'path label' with an integer label"):
        parse_line(text)


def test_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / 'bad.txt'
    bad.write_text('a.jpg 1\n\n \t\nb.jpg\n')
    with pytest.raises(UsageError) as e:
        read_list(str(bad))
    assert str(e.value) == f"{bad}:4: expected 'path label' with an integer label, got 'b.jpg'"
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n  \n')
    with pytest.raises(UsageError, match=f'^{empty}: the list names no image$'):
        read_list(str(empty))
    with pytest.raises(FileNotFoundError):
        read_list(str(tmp_path / 'missing.txt'))


def test_root_folder_is_concatenated_and_lines_counted(tmp_path):
    (tmp_path / 'l.txt').write_bytes(b'a.jpg 1\r\n\nsub/b c.jpg 2\nc\xff.jpg 3\n')
    images = read_list(str(tmp_path / 'l.txt'), root_folder='images')
    assert [(i.path, i.label, i.line) for i in images] == [
        ('imagesa.jpg', 1, 1), ('imagessub/b c.jpg', 2, 3), ('imagesc\udcff.jpg', 3, 4)]
    assert labels_of(images).tolist() == [1, 2, 3]


def test_load_images_names_the_line_of_a_bad_image(tmp_path):
    Image = pytest.importorskip('PIL.Image')
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / 'ok.png')
    (tmp_path / 'text.png').write_text('not a PNG')
    (tmp_path / 'l.txt').write_text('ok.png 0\nok.png 1\n')
    x, y = load_images(str(tmp_path / 'l.txt'), str(tmp_path) + '/', scale=1)
    assert x.shape == (2, 1, 2, 3) and y.tolist() == [0, 1]
    (tmp_path / 'l.txt').write_text('ok.png 0\nok.png 1\n\ngone.png 1\n')
    with pytest.raises(UsageError, match=r"l.txt:4: cannot read '.*gone.png' as an image"):
        load_images(str(tmp_path / 'l.txt'), str(tmp_path) + '/')
    (tmp_path / 'l.txt').write_text('text.png 1\n')
    with pytest.raises(UsageError, match=r"l.txt:1: cannot read '.*text.png' as an image"):
        load_images(str(tmp_path / 'l.txt'), str(tmp_path) + '/')


def test_npair_image_data_reads_the_same_images_and_labels(caffe, tmp_path):
    """Every rule above in one list: the layer (P = K = 1, so an epoch is every image
    once) yields exactly the images and labels the reader finds."""
    Image = pytest.importorskip('PIL.Image')
    lines = ['plain.png 3', 'dir with spaces/a b.png 4', ' lead.png 5', 'trail.png 6 \t\r',
             'two.png  7', 'tab.png \t8', 'plus.png +9', 'neg.png -2', '', ' \t']
    root = str(tmp_path / 'x_')       # a root_folder without a slash: concatenated
    (tmp_path / 'x_dir with spaces').mkdir()
    (tmp_path / 'list.txt').write_text('\n'.join(lines) + '\n')
    images = read_list(str(tmp_path / 'list.txt'), root)
    for i, image in enumerate(images):
        Image.fromarray(np.full((2, 2), i, np.uint8)).save(image.path, format='PNG')
    net = tmp_path / 'net.prototxt'
    net.write_text(f'''
layer {{ name: "data" type: "NPairImageData" top: "data" top: "label"
  image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{root}" is_color: false }}
  npair_image_data_param {{ classes_per_batch: 1 images_per_class: 1 }} }}''')
    layer = caffe.Net(str(net), caffe.TRAIN)
    seen = []
    for _ in images:
        layer.forward()
        seen.append((int(layer.blobs['data'].data[0, 0, 0, 0]),
                     int(layer.blobs['label'].data[0])))
    assert sorted(seen) == [(i, image.label) for i, image in enumerate(images)]
