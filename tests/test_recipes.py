"""Recipes and the config's layers: every shipped recipe checks, --set types each field, the precedence holds,
run.json reads back as the recipe it records, and the command line's parser builds without torch."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ffstream.commands.bench import BENCH_BASE, bench_config
from ffstream.config import ConfigError, RunConfig, load, recipes
from ffstream.sources.idx import FASHION_MNIST_DIR
from ffstream.supervisor import resolve_stream
from tests.processes import env

SHIPPED = ("images-dense", "images-conv-supervised", "images-conv-unsupervised", "recurrent", "webcam-live", "video", "video-novelty")
NO_FASHION = not Path(FASHION_MNIST_DIR).is_dir()


def test_the_seven_recipes_are_shipped_with_a_description_and_a_measured_figure():
    assert sorted(recipes.shipped()) == sorted(SHIPPED)
    for name in SHIPPED:
        recipe = recipes.read(name)
        assert recipe.description and recipe.measured["figure"] and recipe.measured["command"], name
        assert not set(recipe.data) & set(recipes.NOTES), "the notes are not config keys"


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_recipe_checks(name):
    """Loaded, resolved against its source (synthetic in place of a camera or a video file), and checked."""
    cfg = load(recipe=name, environ={}, check=False)
    if cfg.stream.source.startswith("fashion-mnist"):
        if NO_FASHION:
            pytest.skip(f"{FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)")
    else:
        cfg.stream.source = "synthetic:64"  # the recipe's camera or video, replaced by frames that are always here
    resolve_stream(cfg)
    cfg.check()
    assert cfg.model.max_batch == cfg.stream.batch


def test_set_types_each_value_by_its_field():
    cfg = load(environ={}, sets=["model.layers=conv:8x3x3,conv:16x3x3/2", "sleep.enabled=false", "model.lr=0.01",
                                 "stream.size=32x48", "model.threshold=none", "model.window=2,4", "threads=1", "stream.task=unsupervised"])
    assert cfg.model.layers == ("conv:8x3x3", "conv:16x3x3/2")
    assert cfg.sleep.enabled is False and cfg.model.lr == 0.01 and cfg.model.threshold is None
    assert cfg.stream.size == (32, 48) and cfg.model.window == (2, 4) and cfg.threads == 1


@pytest.mark.parametrize("item, words", [
    ("model.bogus=1", ["unknown config key model.bogus;", "lr"]),
    ("bogus=1", ["unknown config key bogus;"]),
    ("modle.lr=1", ["unknown section 'modle'"]),
    ("model.lr=fast", ["model.lr", "bad value 'fast'"]),
    ("stream.batch=2.5", ["stream.batch", "bad value '2.5'"]),
    ("sleep.enabled=maybe", ["sleep.enabled", "true or false"]),
    ("model.lr", ["section.key=value"]),
])
def test_a_bad_set_is_one_line_naming_it(item, words):
    with pytest.raises(ConfigError) as caught:
        load(environ={}, sets=[item])
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_recipe_file_with_an_unknown_key_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"description": "a typo in a field name", "model": {"widths": [10]}}))
    with pytest.raises(ConfigError, match=r"unknown config key model\.widths;.*typo\.json"):
        load(environ={}, recipe=str(path))
    with pytest.raises(ConfigError, match="unknown recipe 'no-such'.*images-dense"):
        load(environ={}, recipe="no-such")


def test_precedence_recipe_config_env_set_flags(tmp_path):
    """Each layer overrides the one below it, field by field; fields a layer does not set pass through."""
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"model": {"lr": 0.02, "peer_weight": 0.01}, "stream": {"epochs": 3}}))
    environ = {"FFSTREAM_MODEL_LR": "0.03", "FFSTREAM_STREAM_EPOCHS": "4"}
    cfg = load(str(config_file), environ=environ, recipe="images-conv-unsupervised", sets=["stream.epochs=5"],
               overrides={"stream": {"seed": 7, "epochs": None}}, check=False)
    assert cfg.model.layers == ("conv:20x3x3", "conv:80x3x3/2", "conv:240x3x3/2")  # the recipe's
    assert cfg.model.peer_weight == 0.01  # the file over the default
    assert cfg.model.lr == 0.03  # the environment over the file over the recipe
    assert cfg.stream.epochs == 5  # --set over the environment; a flag not given (None) changes nothing
    assert cfg.stream.seed == 7  # a flag over everything
    assert cfg.model.batch_norm is True and cfg.sleep.route == "chain"  # the recipe's, untouched above it


def test_stream_batch_carries_the_micro_batch_unless_that_is_set_too():
    assert load(environ={}, sets=["stream.batch=8"]).model.max_batch == 8
    assert load(environ={}, sets=["stream.batch=8", "model.max_batch=4"]).model.max_batch == 4
    assert load(environ={}).model.max_batch == RunConfig().model.max_batch


def test_run_json_reads_back_as_the_recipe_it_records(tmp_path):
    cfg = load(environ={}, recipe="recurrent", sets=["stream.source=synthetic:128", "model.layers=16,16"])
    (tmp_path / "run.json").write_text(cfg.recipe_json())
    for given in (str(tmp_path), str(tmp_path / "run.json")):  # a checkpoint directory, or its run.json
        again = load(environ={}, recipe=given)
        assert again.stream == cfg.stream and again.model == cfg.model and again.sleep == cfg.sleep
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="no run.json"):
        recipes.find(str(tmp_path / "elsewhere"))


def test_the_bench_starts_from_its_base_below_the_recipe():
    args = argparse.Namespace(recipe=None, sets=["stream.epochs=2"], max_frames=640, seed=3)
    cfg = bench_config(args)
    assert cfg.model.layers == tuple(BENCH_BASE["model"]["layers"]) and cfg.stream.epochs == 2
    assert cfg.stream.max_frames == 640 and cfg.stream.seed == 3 and cfg.stream.source == "fashion-mnist:train"
    args = argparse.Namespace(recipe="images-conv-supervised", sets=[], max_frames=None, seed=None)
    cfg = bench_config(args)
    assert cfg.model.competition and cfg.model.region == 99 and cfg.stream.epochs == 7 and cfg.model.lr == 0.01


def test_the_parser_builds_without_torch():
    code = "import sys, ffstream.cli; ffstream.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_run_has_at_most_15_flags_in_groups():
    code = ("import ffstream.cli as c; run = c.build_parser()._subparsers._group_actions[0].choices['run']; "
            "flags = [a for a in run._actions if a.option_strings and a.dest != 'help']; "
            "groups = [g for g in run._action_groups if g._group_actions and g.title not in ('options', 'optional arguments')]; "
            "print(len(flags), len(groups))")
    result = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    flags, groups = map(int, result.stdout.split())
    assert flags <= 15 and groups >= 4, result.stdout


def test_recipes_lists_every_recipe_with_its_figure_and_show_prints_the_json():
    listing = subprocess.run([sys.executable, "-m", "ffstream", "recipes"], env=env(), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr[-2000:]
    for name in SHIPPED:
        assert f"\n{name}\n" in f"\n{listing.stdout}", listing.stdout
        assert recipes.read(name).measured["figure"] in listing.stdout
    shown = subprocess.run([sys.executable, "-m", "ffstream", "recipes", "show", "images-conv-supervised"], env=env(),
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout) == json.loads(recipes.shipped()["images-conv-supervised"].read_text())
