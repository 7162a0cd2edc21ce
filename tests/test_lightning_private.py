"""Every private Lightning name in runtime/lightning_private.py still exists in the installed Lightning.

Each check fails with "Lightning <version> no longer has <name>: <what litlab uses it for>", so raising the
`lightning<2.7` bound is: change pyproject.toml, run this file, fix what it names.
"""

from __future__ import annotations

import inspect

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import signature_utils

from runtime import lightning_private as lp


def missing(name: str, why: str) -> str:
    return f"Lightning {L.__version__} no longer has {name}: {why}. Adapt runtime/lightning_private.py."


@pytest.mark.parametrize("owner, name, params, why", [
    (LightningCLI, "_parse_ckpt_path", ["self"], "checking --ckpt_path before its hyperparameters are read"),
    (LightningCLI, "_set_seed", ["self"], "checking seed_everything's range before Lightning seeds numpy"),
    (ModelCheckpoint, "_save_last_checkpoint", ["self", "trainer", "monitor_candidates"], "writing last.ckpt"),
    (ModelCheckpoint, "_monitor_candidates", ["self", "trainer"], "the metrics last.ckpt's name is formatted with"),
    (LightningCLI, "_add_subcommands", ["self", "parser", "kwargs"], "whole-sentence help lines in litlab --help"),
    (LightningCLI, "_prepare_subcommand_parser", ["self", "klass", "subcommand", "kwargs"],
     "test/validate print litlab's summary instead of Lightning's metric table (verbose=False)"),
])
def test_private_methods_exist_with_the_signature_litlab_calls(owner, name, params, why):
    method = getattr(owner, name, None)
    assert callable(method), missing(f"{owner.__name__}.{name}", why)
    got = list(inspect.signature(method).parameters)
    assert got == params, missing(f"{owner.__name__}.{name}{tuple(params[1:])} (it takes {got[1:]})", why)


def test_the_hooks_override_what_lightning_calls():
    # The adapters only work while Lightning calls these names on the instance (so a subclass sees the call).
    assert lp.CLIHooks._parse_ckpt_path is not LightningCLI._parse_ckpt_path
    assert lp.LastCheckpointHooks._save_last_checkpoint is not ModelCheckpoint._save_last_checkpoint
    src = inspect.getsource(ModelCheckpoint)
    assert "self._save_last_checkpoint(" in src, missing("ModelCheckpoint calling self._save_last_checkpoint",
                                                         "Lightning's own last.ckpt trigger, which litlab turns off")


def test_batch_progress_and_current_fx_name(tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    assert isinstance(lp.batches_processed(trainer), int) and isinstance(lp.on_last_batch(trainer), bool) \
        and isinstance(lp.batches_processed_in_run(trainer), int), missing(
        "fit_loop.epoch_loop.batch_progress.current.processed / .total.processed / .is_last_batch",
        "when last.ckpt is written and where a resumed epoch's data order restarts")
    module = L.LightningModule()
    assert hasattr(module, lp.CURRENT_FX_NAME), missing(f"LightningModule.{lp.CURRENT_FX_NAME}",
                                                         "the per-step attribute Classifier stores cheaply")


def test_hook_signature_checks_read_a_precomputed_signature():
    def step(self, batch, batch_idx):  # noqa: ANN001
        return batch

    step.__signature__ = inspect.signature(lambda self, batch: None)  # a precomputed one, without batch_idx
    found = signature_utils.is_param_in_hook_signature(step, "batch_idx", min_args=2)
    assert found is False, missing("is_param_in_hook_signature reading inspect.signature (it ignored "
                                   "__signature__)", "Classifier's precomputed training_step signature")
    lp.precompute_signature(step)
    assert list(step.__signature__.parameters) == ["self", "batch"]


def test_csv_writer_attributes(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    assert lp.csv_metrics_file(logger).name == "metrics.csv", missing("the CSV writer's metrics_file_path",
                                                                      "restoring metrics.csv rows on resume")
    lp.add_csv_columns(logger, ["b"])
    logger.log_metrics({"a": 2.0}, step=1)
    logger.save()
    header = lp.csv_metrics_file(logger).read_text().splitlines()[0].split(",")
    assert "b" in header, missing("the CSV writer's metrics_keys", "keeping restored columns in metrics.csv")


def test_nothing_else_touches_a_private_lightning_name():
    """Outside runtime/lightning_private.py, litlab's code names none of these (grep-level guard)."""
    from helpers import REPO

    names = ["_parse_ckpt_path", "_run_subcommand", "_save_last_checkpoint", "_monitor_candidates",
             "batch_progress", "_current_fx_name", "metrics_file_path", "metrics_keys", "__signature__",
             "_add_subcommands", "_subcommands_action", "_choices_actions", "_prepare_subcommand_parser",
             "_subcommand_method_arguments", "_set_seed"]
    files = [REPO / "cli.py", *(p for d in ("callbacks", "datamodules", "experiments", "lit_models", "runtime")
                                for p in (REPO / d).rglob("*.py"))]
    offenders = [f"{p.relative_to(REPO)}: {n}" for p in files if p.name != "lightning_private.py"
                 for n in names if n in p.read_text()]
    assert not offenders, offenders


def test_lightning_skips_a_hook_set_to_none_and_runs_every_defined_one(tmp_path):
    from lightning.pytorch.demos.boring_classes import BoringModel

    class Ends(L.Callback):
        def __init__(self) -> None:
            self.ends, self.backwards = 0, 0

        def on_train_batch_end(self, *args) -> None:
            self.ends += 1

    class Backwards(Ends):  # a subclass's own hook, calling the inherited no-op through super()
        def on_after_backward(self, trainer, pl_module) -> None:
            super().on_after_backward(trainer, pl_module)
            self.backwards += 1

    ends, backwards, module = Ends(), Backwards(), BoringModel()
    assert "on_train_batch_end" not in lp.skip_no_op_batch_hooks(ends)
    assert ends.on_after_backward is None and Ends.on_after_backward is L.Callback.on_after_backward
    assert lp.skip_no_op_batch_hooks(backwards) == [h for h in lp.BATCH_HOOKS
                                                    if h not in ("on_after_backward", "on_train_batch_end")]
    assert lp.skip_no_op_batch_hooks(module) == list(lp.TRAIN_BATCH_HOOKS)
    # Validation too: the evaluation loop reads the module's evaluation batch hooks' signatures, which stay.
    trainer = L.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=1, num_sanity_val_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[ends, backwards])
    try:
        trainer.fit(module)
    except TypeError as err:  # "'NoneType' object is not callable"
        pytest.fail(missing("_call_callback_hooks/_call_lightning_module_hook skipping a hook that is not callable",
                            f"skip_no_op_batch_hooks ({err})"))
    assert (ends.ends, backwards.ends, backwards.backwards) == (3, 3, 3)
