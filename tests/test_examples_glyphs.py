"""The glyphs example on tiny inputs: the face checks, the rendering, the split and
the lists of `python -m npair_examples.glyphs`, and the nets of
`python -m npair_examples.glyph_nets` (current, and each trains a step in Caffe)."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

from npair_examples import glyph_nets, glyphs, image_list  # noqa: E402

# Five faces of the example's table: two distinct designs, a near-clone of the first
# (the monospaced twin), a face whose ideographs render empty and one with none.
TINY_FACES = """# file	face	name	package
truetype/wqy/wqy-microhei.ttc	0	wqy-microhei	fonts-wqy-microhei
truetype/arphic-gkai00mp/gkai00mp.ttf	0	ar-kaiti-gb	fonts-arphic-gkai00mp
truetype/wqy/wqy-microhei.ttc	1	wqy-microhei-mono	fonts-wqy-microhei
truetype/seto/setofont-ex.ttf	0	seto-ex	fonts-seto
truetype/unfonts-core/UnDinaru.ttf	0	un-dinaru	fonts-unfonts-core
"""


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("faces") / "faces.tsv"
    path.write_text(TINY_FACES)
    for face in glyphs.read_faces(str(path)):
        if not os.path.exists(face["file"]):
            pytest.fail("%s is not installed: scripts/install_deps.sh installs the example's "
                        "font packages (%s)" % (face["file"], face["package"]))
    return str(path)


def render(table, out, *extra):
    return glyphs.main(["--faces", table, "--out", str(out), "--characters", "12",
                        "--unseen", "4", "--size", "32", *extra])


@pytest.fixture(scope="module")
def tiny_data(tiny_table, tmp_path_factory):
    out = tmp_path_factory.mktemp("glyphs") / "data"
    assert render(tiny_table, out) == 0
    return out


def read_list(path):
    images = image_list.read_list(str(path))
    return [i.path for i in images], [i.label for i in images]


def digest(folder):
    h = hashlib.sha256()
    for dirpath, dirs, names in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(names):
            h.update(name.encode())
            h.update(open(os.path.join(dirpath, name), "rb").read())
    return h.hexdigest()


def test_faces_are_checked_not_assumed(tiny_data):
    faces = dict(line.split("\t")[0::4] for line in
                 open(tiny_data / "faces.tsv").read().splitlines()[1:])
    assert faces["wqy-microhei"] == "kept" and faces["ar-kaiti-gb"] == "kept"
    assert faces["wqy-microhei-mono"].startswith("near-clone of wqy-microhei")
    assert "empty" in faces["seto-ex"]
    assert faces["un-dinaru"] == "maps only 0 ideographs"


def test_split_and_lists(tiny_data):
    train_paths, train_labels = read_list(tiny_data / "train.txt")
    unseen_paths, unseen_labels = read_list(tiny_data / "unseen.txt")
    assert sorted(set(train_labels)) == list(range(8))        # softmax's 0..C_train-1
    assert sorted(set(unseen_labels)) == list(range(8, 12))
    assert len(train_paths) == 8 * 2 and len(unseen_paths) == 4 * 2   # one image per face
    classes = open(tiny_data / "classes.tsv").read().splitlines()[1:]
    assert len(classes) == 12
    for line in classes:
        label, codepoint, char, split = line.split("\t")
        assert codepoint == "U+%04X" % ord(char) and 0x4E00 <= ord(char) <= 0x9FFF
        assert split == ("unseen" if int(label) >= 8 else "train")
    from PIL import Image
    for path in train_paths + unseen_paths:
        im = np.asarray(Image.open(tiny_data / path))
        assert im.shape == (32, 32) and im.dtype == np.uint8
        assert im.max() > 128 and (im > 0).mean() < 0.8      # ink on a black ground


def test_the_two_faces_of_a_character_differ(tiny_data):
    from PIL import Image
    paths, labels = read_list(tiny_data / "train.txt")
    a, b = [np.asarray(Image.open(tiny_data / p), np.float64) for p, y in
            zip(paths, labels) if y == 0]
    assert np.abs(a - b).mean() > 5


def test_deterministic_cached_and_keyed_on_its_inputs(tiny_table, tiny_data, tmp_path,
                                                      capsys):
    again = tmp_path / "again"
    assert render(tiny_table, again) == 0
    assert digest(again) == digest(tiny_data)
    capsys.readouterr()
    stamp = os.path.getmtime(again / "train.txt")
    assert render(tiny_table, again) == 0
    assert "reused" in capsys.readouterr().out
    assert os.path.getmtime(again / "train.txt") == stamp
    assert render(tiny_table, again, "--seed", "1") == 0
    assert "reused" not in capsys.readouterr().out
    assert digest(again) != digest(tiny_data)


def test_a_folder_it_did_not_write_is_left_alone(tiny_table, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(glyphs.UsageError, match="holds no meta.json of this tool"):
        render(tiny_table, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_empty_glyph_is_detected():
    face = dict(file="/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", face=0)
    r = glyphs.Renderer(face, 32)
    assert r.ink("\u3000") is None                    # the ideographic space
    assert r.ink("\u4e00") is not None


@pytest.mark.parametrize("table, message", [
    ("truetype/wqy/wqy-microhei.ttc\tzero\tx\tp\n", "expected `file<TAB>face"),
    ("a.ttf\t0\tsame\tp\nb.ttf\t0\tsame\tp\n", "face names repeat"),
    ("# only a comment\n", "no faces"),
])
def test_bad_faces_table_is_one_line(tmp_path, table, message):
    path = tmp_path / "faces.tsv"
    path.write_text(table)
    p = subprocess.run([sys.executable, "-m", "npair_examples.glyphs", "--faces", str(path),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    assert p.returncode == 2
    assert p.stderr.startswith("python -m npair_examples.glyphs: error: ")
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_too_few_faces_is_a_usage_error(tmp_path):
    path = tmp_path / "faces.tsv"
    path.write_text("truetype/wqy/wqy-microhei.ttc\t0\tone\tfonts-wqy-microhei\n"
                    "missing/none.ttf\t0\tgone\tfonts-none\n")
    with pytest.raises(glyphs.UsageError, match="fewer than 2 usable faces.*gone: font file "
                                                "missing \\(apt package fonts-none\\)"):
        glyphs.main(["--faces", str(path), "--out", str(tmp_path / "o")])


def test_committed_nets_are_what_the_generator_writes(npair_loss_pb2_importable):
    assert glyph_nets.main(["--check", "--out", os.path.join(ROOT, "models", "glyphs")]) == 0


def test_npair_nets_carry_the_usage_block_mining(usage_param_str, npair_loss_pb2_importable):
    from google.protobuf import text_format
    from npair_loss.params import message_class
    usage = text_format.Parse(usage_param_str, message_class()())
    for model in ("npair", "npair_python"):
        text = open(os.path.join(ROOT, "models", "glyphs", model + ".prototxt")).read()
        body = (re.search(r"npair_loss_param \{(.*)\}", text) or
                re.search(r'param_str: "(.*)"', text)).group(1)
        assert text_format.Parse(body, message_class()()) == usage, model


@pytest.fixture(scope="module")
def caffe_bin():
    path = shutil.which("caffe")
    if path is None:
        pytest.fail("`caffe` is not on PATH: build the fork, then `source build/env.sh`")
    return path


@pytest.mark.parametrize("model", glyph_nets.MODELS)
def test_each_comparison_net_trains_a_step(model, tiny_data, tmp_path, caffe_bin):
    """Every model's net, on the tiny data (4 characters x 2 a batch), runs `caffe train`
    for two iterations with a test pass and a snapshot the deploy net loads."""
    pytest.importorskip("caffe")
    data = str(tiny_data) + "/"
    (tmp_path / "net.prototxt").write_text(glyph_nets.train_net(model, 8, data, 4))
    text = glyph_nets.solver(model, str(tmp_path), name="step")
    text = text.replace('%s/%s.prototxt' % (tmp_path, model), str(tmp_path / "net.prototxt"))
    text = re.sub(r"max_iter: \d+", "max_iter: 2", text)
    text = re.sub(r"test_interval: \d+", "test_interval: 2", text)
    text = re.sub(r"test_iter: \d+", "test_iter: 1", text)
    text = re.sub(r'snapshot_prefix: ".*"', 'snapshot_prefix: "%s/step"' % tmp_path, text)
    (tmp_path / "solver.prototxt").write_text(text)
    env = dict(os.environ, GLOG_logtostderr="1",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"),
                                           os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([caffe_bin, "train", "--solver=" + str(tmp_path / "solver.prototxt")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Optimization Done" in p.stderr
    assert re.search(r"Test net output #\d+: retrieve_top1 = ", p.stderr)
    import caffe
    net = caffe.Net(os.path.join(ROOT, "models", "glyphs", "deploy.prototxt"), caffe.TEST,
                    weights=str(tmp_path / "step_iter_2.caffemodel"))
    net.forward(data=np.zeros((1, 1, 32, 32), np.float32))
    np.testing.assert_allclose(np.linalg.norm(net.blobs["embed_norm"].data), 1, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_snapshots(tiny_data, tmp_path_factory, caffe_bin):
    """npair and softmax trained 4 iterations on the tiny data, snapshots at 2 and 4."""
    pytest.importorskip("caffe")
    out = tmp_path_factory.mktemp("trained")
    env = dict(os.environ, GLOG_logtostderr="1")
    for model in ("npair", "softmax"):
        (out / (model + ".prototxt")).write_text(
            glyph_nets.train_net(model, 8, str(tiny_data) + "/", 4))
        text = glyph_nets.solver(model, str(out))
        text = re.sub(r"max_iter: \d+", "max_iter: 4", text)
        text = re.sub(r"snapshot: \d+", "snapshot: 2", text)
        text = re.sub(r"test_interval: \d+", "test_interval: 100", text)
        text = re.sub(r'snapshot_prefix: ".*"', 'snapshot_prefix: "%s/%s"' % (out, model), text)
        (out / "solver.prototxt").write_text(text)
        p = subprocess.run([caffe_bin, "train", "--solver=" + str(out / "solver.prototxt")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_evaluation_convergence_and_pictures(tiny_data, tiny_snapshots, tmp_path):
    from npair_examples import convergence, evaluate, plot_embedding, plot_retrieval
    import json
    deploy = os.path.join(ROOT, "models", "glyphs", "deploy.prototxt")
    unseen = str(tiny_data / "unseen.txt")
    root = str(tiny_data) + "/"
    metrics, emb = tmp_path / "metrics.json", tmp_path / "embeddings.npz"
    assert evaluate.main(["--deploy", deploy, "--list", "unseen=" + unseen, "--root-folder",
                          root, "--pixels", "--model", "untrained=",
                          "--model", "npair=%s/npair_iter_4.caffemodel" % tiny_snapshots,
                          "--model", "softmax=%s/softmax_iter_4.caffemodel" % tiny_snapshots,
                          "--out", str(metrics), "--embeddings", str(emb)]) == 0
    result = json.load(open(metrics))
    assert set(result["unseen"]) == {"untrained", "npair", "softmax", "pixels"}
    for name, row in result["unseen"].items():
        assert row["classes"] == 4 and row["n"] == 8
        for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"):
            assert 0 <= row[key] <= 1, (name, key)
        assert (row["nmi"] is None) == (name == "pixels")
    saved = np.load(emb)
    assert saved["unseen__npair"].shape == (8, 64)
    assert list(saved["unseen__labels"]) == read_list(tiny_data / "unseen.txt")[1]

    conv = tmp_path / "convergence.json"
    assert convergence.main(["--deploy", deploy, "--list", unseen, "--root-folder", root,
                             "--model", "npair=%s/npair" % tiny_snapshots,
                             "--model", "softmax_seed2=%s/softmax" % tiny_snapshots,
                             "--classes", "3", "--out", str(conv),
                             "--plot", str(tmp_path / "convergence.png")]) == 0
    curves = json.load(open(conv))
    assert curves["subset"] == {"classes": 3, "images": 6, "seed": 0, "list": unseen}
    assert [p["iter"] for p in curves["models"]["npair"]] == [0, 2, 4]
    # iteration 0 is the untrained net: the same for every model
    assert curves["models"]["npair"][0] == curves["models"]["softmax_seed2"][0]

    assert plot_retrieval.main([str(emb), "--list", unseen, "--root-folder", root,
                                "--queries", "3", "-k", "4",
                                "--out", str(tmp_path / "retrieval.png")]) == 0
    assert plot_embedding.main([str(emb), "--classes", "2", "--method", "pca",
                                "--metrics", str(metrics), "--models", "npair,softmax",
                                "--out", str(tmp_path / "tsne.png")]) == 0
    for png in ("convergence.png", "retrieval.png", "tsne.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--model", "npair"], "--model wants NAME=WEIGHTS or NAME=, got 'npair'"),
    (["--model", "npair=missing.caffemodel"], "missing.caffemodel: no such weights file"),
    (["--model", "untrained=", "--list", "unseen=BAD"],
     "BAD:2: expected 'path label' with an integer label"),
])
def test_evaluate_user_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "BAD").write_text("a.png 0\nb.png\n")
    p = subprocess.run([sys.executable, "-m", "npair_examples.evaluate", "--deploy",
                        os.path.join(ROOT, "models", "glyphs", "deploy.prototxt")] + args,
                       cwd=str(tmp_path), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")])))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("python -m npair_examples.evaluate: error: ")
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1
