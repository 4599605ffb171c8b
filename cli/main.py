"""``snnconv convert``, ``evaluate``, ``compress`` and ``train``: parse options, make one library call, render the
result."""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Optional

import typer

from snnconv.errors import ConfigError, GateFailed, SnnconvError

from . import options as opt
from . import render

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Convert trained CNNs into integrate-and-fire spiking networks and report what they cost.")

# shared option declarations ---------------------------------------------------------------
DATA = typer.Option(None, "--data", help="Evaluation data: builtin | fashion-mnist:DIR | mnist:DIR | cifar10:DIR | "
                                         "cifar100:DIR | imagefolder:DIR | npz:FILE (test split). Default: builtin; "
                                         "for an artifact, the data its convert run recorded.")
CALIB = typer.Option(None, "--calib-data", help="Calibration data spec (train split). Default: the --data spec.")
CALIB_SAMPLES = 1000
CALIB_N = typer.Option(CALIB_SAMPLES, "--calib-samples", help="Calibration samples (a seeded random subset).")
COMPRESS_CALIB_N = typer.Option(None, "--calib-samples", help=f"Calibration samples (a seeded random subset; default "
                                f"{CALIB_SAMPLES}, or as many as the artifact recorded when its own are used).")
LIMIT = typer.Option(None, "--limit", help="Evaluate on at most this many samples (a seeded random subset).")
MEAN = typer.Option(None, "--mean", help="Per-channel input mean after scaling pixels to [0,1], e.g. 0.485,0.456,0.406.")
STD = typer.Option(None, "--std", help="Per-channel input std, e.g. 0.229,0.224,0.225.")
SIZE = typer.Option(None, "--size", help="Resize imagefolder images to HxW.")
T = typer.Option(None, "-T", "--time-steps", help="Time steps: one value or a list (8,16,32); the largest is simulated "
                                                  "and every step is recorded.")
ENERGY = typer.Option("45nm", "--energy", help="Energy model: 45nm | fpga28 | a TOML/JSON file.")
DEVICE = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | auto.")
SEED = typer.Option(0, "--seed", help="Seed for data subsets and anything random.")
BATCH = typer.Option(256, "--batch-size", help="Samples per batch.")
CHUNK = typer.Option(None, "--chunk-steps", help="Time steps simulated together (memory grows with it, not with T). "
                     "Default: as many, up to 8, as keep a batch's block of the largest layer within 16 MiB.")
QUIET = typer.Option(False, "--quiet", help="No progress bars, summary table only.")
JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
DEBUG = typer.Option(False, "--debug", help="Show the full traceback on errors.")
ARCH = typer.Option(None, "--arch", help="Architecture factory (pkg.module:fn or file.py:fn) for a state-dict MODEL.")
PICKLE = typer.Option(False, "--allow-pickle", help="Allow loading a pickled nn.Module (runs code from the file).")
BALANCE = typer.Option("mse", "--balance", help="Threshold balancing: max | percentile | mse.")
GRANULARITY = typer.Option("channel", "--granularity", help="Thresholds per layer or per channel.")
PERCENTILE = typer.Option(99.99, "--percentile", help="Percentile for --balance percentile.")
BALANCE_STEPS = typer.Option(None, "--balance-steps", help="T the mse threshold search quantizes for (default: "
                                                           "half the converted T; docs/design.md, 'Thresholds "
                                                           "instead of weight normalization').")
HALF_INIT = typer.Option(True, "--half-init/--no-half-init", help="Initial membrane potential theta/2.")
SIGNED = typer.Option(False, "--signed-spikes/--no-signed-spikes",
                      help="Neurons may also emit negative spikes that retract earlier ones "
                           "(docs/design.md, 'Signed spikes').")
CALIBRATE = typer.Option("advanced", "--calibrate", help="Post-conversion calibration: advanced (default) | weights (advanced plus weight refit; slower) | light | none.")
CALIBRATE_N = typer.Option(256, "--calibrate-samples", help="Samples used by calibration.")
MAXPOOL = typer.Option("gate", "--maxpool", help="Max pooling: gate (spiking gate) | avg (rewrite, changes the ANN).")
TIMING_HELP = ("How IF spikes cross between per-layer windows: linear (t' = floor(t W/S)) | substep (from the "
               "interpolated threshold-crossing time) | substep-vfire (the TEAS slides' x + Vth/Vfire). docs/teas.md.")


def _run(job, debug: bool, show=None):
    """Run a job; SnnconvErrors become one sentence on stderr and their exit code. A failed gate first shows
    the run it failed (``show(result)``: the summary, or the JSON a CI script reads), then names the gate."""
    try:
        return job()
    except GateFailed as exc:
        if show is not None and exc.result is not None:
            show(exc.result)
        render.errors.print(f"[bold red]{exc}[/bold red]")
        raise typer.Exit(exc.exit_code)
    except SnnconvError as exc:
        if debug:
            traceback.print_exc()
        render.errors.print(f"[bold red]Error:[/bold red] {exc}")
        raise typer.Exit(exc.exit_code)


@app.command()
def convert(
    model: Optional[str] = typer.Argument(None, help="file.onnx | file.pt | pkg.module:fn | file.py:fn. "
                                                      "Omit to convert the embedded Fashion-MNIST default."),
    output: Path = typer.Option(Path("snnconv-out"), "-o", "--output", help="Artifact directory to write."),
    data: Optional[str] = DATA, calib_data: Optional[str] = CALIB, calib_samples: int = CALIB_N,
    limit: Optional[int] = LIMIT, mean: Optional[str] = MEAN, std: Optional[str] = STD, size: Optional[str] = SIZE,
    time_steps: Optional[list[str]] = T, balance: str = BALANCE, granularity: str = GRANULARITY,
    percentile: float = PERCENTILE, balance_steps: Optional[int] = BALANCE_STEPS, half_init: bool = HALF_INIT,
    signed_spikes: bool = SIGNED,
    calibrate: str = CALIBRATE, calibrate_samples: int = CALIBRATE_N, maxpool: str = MAXPOOL, energy: str = ENERGY,
    arch: Optional[str] = ARCH,
    allow_pickle: bool = PICKLE, device: str = DEVICE, seed: int = SEED, batch_size: int = BATCH,
    chunk_steps: Optional[int] = CHUNK, quiet: bool = QUIET, json: bool = JSON, debug: bool = DEBUG,
):
    """Import, balance, convert, (calibrate,) evaluate; write the artifact and its reports."""
    from snnconv.workflows import run_convert

    def job():
        opt.check_counts({"--limit": limit, "--calib-samples": calib_samples, "--calibrate-samples": calibrate_samples,
                          "--batch-size": batch_size, "--chunk-steps": chunk_steps})
        eval_cfg = opt.data_config(data or "builtin", "test", limit, seed, mean, std, size)
        calib_cfg = opt.data_config(calib_data or eval_cfg.spec, "train", calib_samples, seed, mean, std, size)
        config = opt.convert_config(balance, granularity, percentile, half_init, calibrate, maxpool, calibrate_samples,
                                    signed_spikes, balance_steps)
        steps = opt.parse_time_steps(time_steps, [32])
        with render.progress_bars(quiet or json) as progress:
            return run_convert(opt.model_argument(model), arch=arch, allow_pickle=allow_pickle, calib_data=calib_cfg,
                               data=eval_cfg, config=config, time_steps=steps, output=output, energy=energy,
                               batch_size=batch_size, chunk_steps=chunk_steps, device=device, seed=seed,
                               progress=progress)

    result = _run(job, debug)
    render.show(result, "snnconv convert", json, quiet)


@app.command()
def evaluate(
    target: Optional[str] = typer.Argument(None, help="An artifact directory, or a MODEL as for convert."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where reports go (default: ARTIFACT/reports "
                                                                          "or ./snnconv-report)."),
    data: Optional[str] = DATA, calib_data: Optional[str] = CALIB, calib_samples: int = CALIB_N,
    limit: Optional[int] = LIMIT, mean: Optional[str] = MEAN, std: Optional[str] = STD, size: Optional[str] = SIZE,
    time_steps: Optional[list[str]] = T, balance: str = BALANCE, granularity: str = GRANULARITY,
    percentile: float = PERCENTILE, balance_steps: Optional[int] = BALANCE_STEPS, half_init: bool = HALF_INIT,
    signed_spikes: bool = SIGNED,
    calibrate: str = CALIBRATE, calibrate_samples: int = CALIBRATE_N, maxpool: str = MAXPOOL, energy: str = ENERGY,
    arch: Optional[str] = ARCH,
    allow_pickle: bool = PICKLE,
    max_acc_drop: Optional[float] = typer.Option(None, "--max-acc-drop", help="Gate: fail if the SNN loses more "
                                                                              "accuracy points than this vs the ANN."),
    max_avg_t: Optional[float] = typer.Option(None, "--max-avg-t", help="Gate: fail if average time steps exceed this."),
    min_energy_ratio: Optional[float] = typer.Option(None, "--min-energy-ratio", help="Gate: fail if ANN energy / SNN "
                                                                                      "energy is below this."),
    device: str = DEVICE, seed: int = SEED, batch_size: int = BATCH, chunk_steps: Optional[int] = CHUNK, quiet: bool = QUIET,
    json: bool = JSON, debug: bool = DEBUG,
    profile: bool = typer.Option(False, "--profile", help="Print per-layer spiking activity (and plot it)."),
    no_exit: bool = typer.Option(False, "--no-exit", help="Run every sample for all steps, ignoring the artifact's "
                                                          "exit policy (SEENN)."),
    timing: Optional[str] = typer.Option(None, "--timing", help=TIMING_HELP + " Default: the artifact's own."),
):
    """Simulate an artifact (or a model, converted in memory), write reports, and apply CI gates."""
    from snnconv.workflows import Gates, run_evaluate

    def job():
        opt.check_counts({"--limit": limit, "--calib-samples": calib_samples, "--calibrate-samples": calibrate_samples,
                          "--batch-size": batch_size, "--chunk-steps": chunk_steps})
        eval_cfg = opt.data_config(data, "test", limit, seed, mean, std, size)
        calib_spec = calib_data or (eval_cfg.spec if eval_cfg else None)
        calib_cfg = opt.data_config(calib_spec, "train", calib_samples, seed, mean, std, size)
        config = opt.convert_config(balance, granularity, percentile, half_init, calibrate, maxpool, calibrate_samples,
                                    signed_spikes, balance_steps)
        gates = Gates(max_acc_drop=max_acc_drop, max_avg_t=max_avg_t, min_energy_ratio=min_energy_ratio)
        opt.check_timing_option(timing)
        with render.progress_bars(quiet or json) as progress:
            return run_evaluate(opt.model_argument(target), arch=arch, allow_pickle=allow_pickle, data=eval_cfg,
                                calib_data=calib_cfg, config=config, time_steps=opt.parse_time_steps(time_steps, None),
                                energy=energy, report_dir=report_dir, gates=gates, batch_size=batch_size,
                                chunk_steps=chunk_steps, device=device, seed=seed, limit=limit, progress=progress,
                                use_exit_policy=not no_exit, timing=timing)

    def show(run):
        render.show(run, "snnconv evaluate", json, quiet)

    result = _run(job, debug, show=show)
    show(result)
    if profile and not json:
        render.console.print(render.profile_table(result))
        render.console.print(f"Activity plot: [bold]{result.report_dir / 'firing_rates.png'}[/bold]")


def _typed_options(ctx: typer.Context) -> dict[str, str]:
    """The options given on the command line: parameter name -> the flag (of an on/off pair, the one typed)."""
    typed = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            off = getattr(param, "secondary_opts", None) and ctx.params.get(param.name) is False
            typed[param.name] = (param.secondary_opts if off else param.opts)[0]
    return typed


@app.command()
def compress(
    ctx: typer.Context,
    artifact: Path = typer.Argument(..., help="An artifact written by snnconv convert (or by compress --method teas); "
                                              "a spiking transformer from snnconv train takes --method dts."),
    method: str = typer.Option(..., "--method", help="teas (per-layer time steps from spiking activity) | dts "
                                                     "(learned per-layer time-step masks) | seenn (per-sample early "
                                                     "exit) | ttfs (one spike per neuron)."),
    output: Path = typer.Option(Path("snnconv-compressed"), "-o", "--output", help="Output artifact directory."),
    accuracy_budget: Optional[float] = typer.Option(None, "--accuracy-budget", "--acc-budget",
                                                    help="Held-out accuracy points the method may lose vs the "
                                                         "uncompressed network (TEAS default 0.1, SEENN 0.5)."),
    budget_confidence: Optional[float] = typer.Option(
        None, "--budget-confidence", help="SEENN-I: choose alpha so that the held-out loss is within --accuracy-budget "
        "with this confidence (an upper bound on the loss, docs/seenn.md), not just as measured, e.g. 0.95."),
    holdout: Optional[float] = typer.Option(None, "--holdout-fraction", help="Share of the calibration data held "
                                            "out (default 0.5; TEAS: for allocation; SEENN: to choose alpha / validate "
                                            "the policy, which trains on the rest)."),
    holdout_data: Optional[str] = typer.Option(None, "--holdout-data", help="TEAS / SEENN: hold out this data (its "
                                               "test split) instead of a share of the calibration data, without the "
                                               "images it shares with the evaluation and calibration data."),
    holdout_samples: Optional[int] = typer.Option(None, "--holdout-samples", help="--holdout-data: use this many of "
                                                  "its images (a seeded random subset; default all)."),
    avg_t_budget: Optional[float] = typer.Option(None, "--avg-t-budget", help="TEAS: cut until the mean T_l is at most "
                                                                             "this, instead of an accuracy budget."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="TEAS: allowed T_l, e.g. 32,16,8,4,2 "
                                                                       "(default: T, T/2, T/4, ... down to --min-t)."),
    min_t: int = typer.Option(1, "--min-t", help="TEAS: smallest T_l."),
    noise: float = typer.Option(0.1, "--noise", help="TEAS: u of the noise sensitivity, relative to the threshold."),
    timing: Optional[str] = typer.Option(None, "--timing", help="TEAS: " + TIMING_HELP + " Default: linear."),
    retune_thresholds: Optional[bool] = typer.Option(
        None, "--retune-thresholds/--keep-thresholds",
        help="TEAS: search each cut layer's threshold again for its own T_l (mse-balanced networks; default) or keep "
             "the thresholds balanced for T."),
    calibrated_trials: Optional[bool] = typer.Option(
        None, "--calibrated-trials/--uncalibrated-trials",
        help="TEAS: measure every cut after calibrating the network for its windows, as the result will be "
             "(calibrated networks; default), or without (faster; the allocation then stops earlier)."),
    score: str = typer.Option("confidence", "--score", help="SEENN-I: confidence (max softmax) | entropy | margin."),
    temperature: str = typer.Option("8", "--temperature", help="SEENN-I: softmax temperature on the summed output, "
                                                               "or auto (chosen on the held-out split)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="SEENN-I: exit threshold (default: the smallest "
                                                                "within --accuracy-budget on the held-out split)."),
    exit_chunk: int = typer.Option(1, "--exit-chunk", help="SEENN: steps between exit decisions (1 = exact SEENN)."),
    policy: bool = typer.Option(False, "--policy", help="SEENN-II: train a policy network that picks the exit step."),
    beta: float = typer.Option(0.01, "--beta", help="SEENN-II: reward penalty for exiting at a wrong step."),
    policy_width: int = typer.Option(8, "--policy-width", help="SEENN-II: policy network width (channels of its "
                                                               "first stage)."),
    window: int = typer.Option(32, "--window", help="TTFS: T_w, steps of each layer's fire window."),
    fire_start: Optional[int] = typer.Option(None, "--fire-start", help="TTFS: T_s, steps between the fire windows "
                                                                        "of consecutive layers (default T_w; smaller "
                                                                        "= early firing)."),
    tc: float = typer.Option(8.0, "--tc", help="TTFS: initial kernel time constant (steps)."),
    percentile: float = typer.Option(99.9, "--percentile", help="TTFS: thresholds from this percentile of the "
                                                                "positive ANN activations."),
    fit_epochs: int = typer.Option(2, "--fit-epochs", help="TTFS: passes of kernel fitting over the calibration "
                                                          "data (0 = keep the initial kernels)."),
    relaxation: bool = typer.Option(True, "--relaxation/--no-relaxation", help="TTFS --finetune: stochastic "
                                                                              "relaxation (SR)."),
    kernel_reg: float = typer.Option(1e-5, "--kernel-reg", help="TTFS --finetune: weight of the kernel "
                                                               "regularization (TR); 0 = off."),
    bn_loss: float = typer.Option(1e-5, "--bn-loss", help="TTFS --finetune: weight of the kernel-aware BN loss "
                                                         "(TB); 0 = off."),
    finetune: bool = typer.Option(False, "--finetune", help="TEAS: fine-tune the weights with T_l fixed "
                                                            "(surrogate-gradient BPTT); SEENN-I: the same with a "
                                                            "loss on every step, on the training split, before "
                                                            "alpha is chosen; TTFS: train weights and kernels "
                                                            "through the surrogate model; on the calibration data."),
    activity_weight: float = typer.Option(0.0, "--activity-weight", help="TEAS --finetune: lambda of the activity "
                                                                         "regularizer P_r."),
    finetune_loss: Optional[str] = typer.Option(None, "--finetune-loss", help="TEAS / SEENN --finetune: 'ce' "
                                                "(cross-entropy on the labels, TEAS's default), 'distill' (squared "
                                                "error to the ANN's outputs), or either on every step's running "
                                                "output: 'ce-every-step' (SEENN's default) or "
                                                "'distill-every-step'."),
    mask_weight: Optional[float] = typer.Option(None, "--mask-weight", help="DTS: lambda_m, weight of the mask loss "
                                                                            "(sum of kept steps; default 3e-3)."),
    groups: Optional[list[str]] = typer.Option(None, "--groups", help="DTS: layer-name pattern (fnmatch, e.g. "
                                                                      "'features_*') of the layers the mask loss "
                                                                      "penalizes; repeat for several (default: all)."),
    mask_lr: Optional[float] = typer.Option(None, "--mask-lr", help="DTS: learning rate of the masks (default 0.01)."),
    initial_steps: Optional[int] = typer.Option(None, "--initial-steps", help="DTS: steps every mask starts with "
                                                                              "(default: all T)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (TEAS and SEENN-I --finetune: 1; "
                                                                "DTS: 1; SEENN-II: 30; TTFS --finetune: 3)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (TEAS and SEENN-I --finetune: Adam 1e-4; "
                                                          "DTS: weights, SGD 1e-3 with momentum 0.9; SEENN-II: SGD "
                                                          "0.01; TTFS --finetune: Adam 1e-3), cosine schedule."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Training checkpoint file, written every epoch."),
    resume: bool = typer.Option(False, "--resume", help="Continue training from --checkpoint."),
    data: Optional[str] = DATA, calib_data: Optional[str] = CALIB, calib_samples: Optional[int] = COMPRESS_CALIB_N,
    limit: Optional[int] = LIMIT, energy: str = ENERGY, device: str = DEVICE, seed: int = SEED,
    batch_size: int = BATCH, chunk_steps: Optional[int] = CHUNK, quiet: bool = QUIET, json: bool = JSON, debug: bool = DEBUG,
):
    """Compress a converted artifact in time and report it beside its uncompressed self."""
    from snnconv.compress import run_compress

    def job():
        opt.refuse_foreign_options(method, _typed_options(ctx), finetune=finetune, policy=policy)
        opt.check_counts({"--limit": limit, "--calib-samples": calib_samples, "--batch-size": batch_size,
                          "--chunk-steps": chunk_steps, "--epochs": epochs, "--holdout-samples": holdout_samples})
        if holdout_data is not None and holdout is not None:
            raise ConfigError("--holdout-fraction splits the calibration data, which --holdout-data replaces as the "
                              "held-out split; drop one of the two.")
        config = opt.compress_config(method, accuracy_budget=accuracy_budget, holdout=holdout, seed=seed,
                                     avg_t_budget=avg_t_budget, candidates=candidates, min_t=min_t, noise=noise,
                                     score=score, temperature=temperature, alpha=alpha, exit_chunk=exit_chunk,
                                     policy=policy, beta=beta, policy_width=policy_width, epochs=epochs, lr=lr,
                                     finetune=finetune, activity_weight=activity_weight, finetune_loss=finetune_loss,
                                     window=window, fire_start=fire_start, tc=tc, percentile=percentile, fit_epochs=fit_epochs,
                                     relaxation=relaxation, kernel_reg=kernel_reg, bn_loss=bn_loss,
                                     mask_weight=mask_weight, groups=groups, mask_lr=mask_lr,
                                     initial_steps=initial_steps, timing=timing,
                                     retune_thresholds=retune_thresholds, calibrated_trials=calibrated_trials,
                                     budget_confidence=budget_confidence)
        if resume and checkpoint is None:
            raise ConfigError("--resume needs --checkpoint FILE to resume from.")
        eval_cfg = opt.data_config(data, "test", limit, seed, None, None, None)
        calib_spec = calib_data or (eval_cfg.spec if eval_cfg else None)
        calib_cfg = opt.data_config(calib_spec, "train", CALIB_SAMPLES if calib_samples is None else calib_samples,
                                    seed, None, None, None)
        holdout_cfg = opt.data_config(holdout_data, "test", None, seed, None, None, None)
        with render.progress_bars(quiet or json) as progress:
            note = None if (quiet or json) else (lambda message: render.console.print(f"  {method.upper()}: {message}"))
            return run_compress(artifact, method, output=output, config=config, calib_data=calib_cfg,
                                calib_samples=calib_samples, holdout_data=holdout_cfg, holdout_samples=holdout_samples,
                                data=eval_cfg, energy=energy, batch_size=batch_size, chunk_steps=chunk_steps,
                                device=device, seed=seed, limit=limit, progress=progress, note=note,
                                checkpoint=checkpoint, resume=resume)

    result = _run(job, debug)
    render.show(result.run, f"snnconv compress --method {method}", json, quiet)
    if not json:
        if result.method == "teas":
            render.console.print(render.teas_table(result.outcome.rows, result.run.summary))
        elif result.method == "ttfs":
            render.console.print(render.ttfs_table(result.run.summary))
        elif result.method == "dts":
            render.console.print(render.dts_table(result.outcome.rows, result.run.summary))
        else:
            render.console.print(render.seenn_table(result.run.summary))


@app.command()
def train(
    output: Path = typer.Option(Path("snnconv-spikformer"), "-o", "--output", help="Artifact directory to write."),
    depth: int = typer.Option(2, "--depth", help="Transformer blocks."),
    dim: int = typer.Option(64, "--dim", help="Embedding dimension (divisible by 4 and by --heads)."),
    heads: int = typer.Option(4, "--heads", help="Attention heads."),
    mlp_ratio: int = typer.Option(4, "--mlp-ratio", help="MLP hidden size / embedding dimension."),
    time_steps: int = typer.Option(4, "-T", "--time-steps", help="Time steps T (direct encoding: the image at every "
                                                                 "step)."),
    tet: bool = typer.Option(False, "--tet/--no-tet", help="TET loss (CE at every step) instead of CE of the "
                                                           "step-averaged output."),
    masks: bool = typer.Option(False, "--masks/--no-masks", help="Train DTS time masks with the weights "
                                                                 "(or add them later: compress --method dts)."),
    mask_weight: float = typer.Option(1e-3, "--mask-weight", help="--masks: lambda_m of the mask loss."),
    groups: Optional[list[str]] = typer.Option(None, "--groups", help="--masks: groups (sps, qkv, attn, mlp) or "
                                                                      "LIF-layer patterns the mask loss penalizes; "
                                                                      "repeat for several (default: qkv, mlp)."),
    epochs: int = typer.Option(3, "--epochs", help="Training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (Adam, cosine schedule)."),
    train_batch: int = typer.Option(64, "--train-batch-size", help="Training batch size."),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="Training data spec (train split). "
                                                                        "Default: the --data spec."),
    train_samples: Optional[int] = typer.Option(None, "--train-samples", help="Train on at most this many samples "
                                                                              "(a seeded random subset)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Training checkpoint file, written every epoch."),
    resume: bool = typer.Option(False, "--resume", help="Continue training from --checkpoint."),
    data: Optional[str] = DATA, limit: Optional[int] = LIMIT, mean: Optional[str] = MEAN, std: Optional[str] = STD,
    size: Optional[str] = SIZE, energy: str = ENERGY, device: str = DEVICE, seed: int = SEED,
    batch_size: int = BATCH, quiet: bool = QUIET, json: bool = JSON, debug: bool = DEBUG,
):
    """Train a Spikformer-style spiking transformer directly (it does not convert); write its artifact and reports."""
    from snnconv.direct_workflows import run_train

    def job():
        opt.check_counts({"--limit": limit, "--train-samples": train_samples, "--batch-size": batch_size,
                          "--train-batch-size": train_batch, "--epochs": epochs})
        if resume and checkpoint is None:
            raise ConfigError("--resume needs --checkpoint FILE to resume from.")
        eval_cfg = opt.data_config(data or "builtin", "test", limit, seed, mean, std, size)
        train_cfg = opt.data_config(train_data or eval_cfg.spec, "train", train_samples, seed, mean, std, size)
        architecture, config = opt.direct_config(depth=depth, dim=dim, heads=heads, mlp_ratio=mlp_ratio,
                                                 time_steps=time_steps, tet=tet, masks=masks, mask_weight=mask_weight,
                                                 groups=groups, epochs=epochs, lr=lr, batch_size=train_batch)
        with render.progress_bars(quiet or json) as progress:
            return run_train(architecture, config, train_data=train_cfg, data=eval_cfg, output=output, energy=energy,
                             batch_size=batch_size, device=device, seed=seed, progress=progress,
                             checkpoint=checkpoint, resume=resume)

    result = _run(job, debug)
    render.show(result, "snnconv train", json, quiet)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
