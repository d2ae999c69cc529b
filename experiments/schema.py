"""Dataclass schemas of every config group, registered in Hydra's ConfigStore.

Each YAML option in ``configs/<group>/`` starts from its schema (``defaults: -
/schema/<group>@_here_: <schema>``), so an unknown key or a value of the wrong type fails
when Hydra composes the config — before any code runs. Ranges are checked afterwards by
the code that owns each value (``experiments.wiring.validate``), still before Ray starts,
with the key in the message. The schemas live in groups of their own (``schema/<group>``), so Hydra
never offers one as a choice of the group it describes (``env=routng`` lists the envs).

Group -> schema (``schema/<group>/<name>`` in the ConfigStore):

========  =============================================================
env       one per registered env, named by its record's ``config_name`` (``routing``,
          ``adaptation``, ``intervention``, …): ``EnvRecord.env_config``'s fields
persona   ``persona`` (``synth.population.PopulationConfig``'s fields and defaults)
reward    one per registered env, same name: ``EnvRecord.reward_config``'s fields
agent     ``ppo`` (RLlib and SB3 PPO), ``baseline``
logger    ``logger``
eval      ``eval``
sweep     ``sweep`` (``experiments.sweep``)
========  =============================================================

Each app's own config starts from ``<app>_schema`` (``APP_SCHEMAS``: train — which
``experiments.sweep`` shares —, collect, evaluate, report, export, serve, registry), with
the same defaults as its YAML (``tests/test_train_config.py`` compares them): every
default lives here.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from envs.registration import env_ids, record
from rewards.reward_model import BradleyTerryConfig
from synth.population import PopulationConfig

__all__ = ["register_configs", "TrainSchema", "APP_SCHEMAS"]


# ---------------------------------------------------------------- persona, env, reward
def _mirror(cls: type, name: str, types: dict[str, Any] | None = None) -> type:
    """A schema with ``cls``'s fields and defaults (so the two cannot drift apart). A field
    gets the type of its default; a container default a fresh copy per config; a field whose
    default OmegaConf cannot type (``None``, a mapping, a union) its type from ``types``,
    else ``Any``."""
    spec = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        if isinstance(default, (dict, list, tuple)):          # containers: fresh copies
            default_field = field(default_factory=lambda d=default: copy.deepcopy(
                list(d) if isinstance(d, tuple) else d))
            typed = Dict[str, Any] if isinstance(default, dict) else List[Any]
        else:
            default_field = field(default=default)
            typed = type(default) if isinstance(default, (bool, int, float, str)) else Any
        spec.append((f.name, (types or {}).get(f.name, typed), default_field))
    return dataclasses.make_dataclass(name, spec)


PersonaSchema = _mirror(PopulationConfig, "PersonaSchema", {
    "proportions": Optional[Dict[str, float]], "groups": Dict[str, float],
    "archetypes": Optional[List[Any]], "events": List[Any], "generator": Optional[str]})


def env_schemas() -> list[tuple[str, str, type]]:
    """``(group, name, schema)`` of every registered env's ``env/`` and ``reward/`` options,
    mirrored from its record (``EnvRecord.env_config``, ``reward_config``)."""
    out = []
    for env_id in env_ids():
        rec = record(env_id)
        title = rec.config_name.title().replace("_", "")
        out += [("schema/env", rec.config_name, _mirror(rec.env_config, f"{title}EnvSchema")),
                ("schema/reward", rec.config_name,
                 _mirror(rec.reward_config, f"{title}RewardSchema"))]
    return out


@dataclass
class LearnedRewardSchema:
    """``reward=learned``: a reward model pays instead of the env's reward
    (``envs.learned_reward``)."""

    kind: str = "learned"               # what tells it from an env's reward config
    model: Optional[str] = None         # a reward_model.npz (experiments.preferences
    #                                     context=observation)
    objective: str = "mean"             # mean | worst_case | uncertainty_weighted
    penalty: float = 1.0                # lambda of uncertainty_weighted


# ---------------------------------------------------------------- agent
@dataclass
class PPOSchema:
    """PPO hyperparameters shared by RLlib (``name: ppo``) and SB3 (``name: sb3_ppo``)."""

    name: str = "ppo"
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_param: float = 0.2
    entropy_coeff: float = 0.01
    vf_loss_coeff: float = 0.5
    grad_clip: float = 0.5
    kl_coeff: float = 0.2               # RLlib's adaptive KL penalty; 0 = clipping only (SB3)
    num_epochs: int = 4
    train_batch_size: int = 16384       # env steps per iteration (all envs together)
    minibatch_size: int = 2048
    hidden: List[int] = field(default_factory=lambda: [128, 128])
    activation: str = "tanh"
    num_envs_per_env_runner: int = 64   # lanes of our native vector env
    num_env_runners: int = 0            # 0: sample in the driver (best on 2 cores)
    sampler: str = "batched"            # RLlib only: batched (learners.rllib_batched) | rllib


@dataclass
class BaselineSchema:
    """A baseline: ``name`` picks it, ``params`` go to its constructor."""

    name: str = "random"
    params: Dict[str, Any] = field(default_factory=dict)
    num_envs: int = 256                 # parallel users while a learning baseline learns


# ---------------------------------------------------------------- logger / eval / run
@dataclass
class LoggerSchema:
    name: str = "wandb"                 # "wandb" or "none"
    mode: str = "offline"               # exported as WANDB_MODE unless already set
    project: str = "personarl"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class EvalSchema:
    episodes: int = 65536               # held-out episodes per policy and population
    baselines: Optional[List[str]] = None   # None: every baseline that applies to the env
    baseline_warmup_steps: int = 2000   # batched steps a learning baseline learns for
    baseline_warmup_envs: int = 256
    # population name -> overrides merged into `persona` ({} = the training population)
    populations: Dict[str, Dict[str, Any]] = field(default_factory=lambda: {"train": {}})


@dataclass
class CheckpointSchema:
    every: int = 10                     # iterations between checkpoints (0: only at the end)
    keep: int = 2                       # newest complete checkpoints kept


@dataclass
class RaySchema:
    start: str = "auto"                 # auto: only when the run needs Ray; always
    num_cpus: int = 2
    address: Optional[str] = None       # connect to an existing cluster instead
    temp_dir: str = "/tmp/personarl-ray"


@dataclass
class AshaSchema:
    grace_period: int = 2               # iterations every trial runs before it can be stopped
    reduction_factor: int = 2           # keep the top 1/reduction_factor at each rung


@dataclass
class SweepSchema:
    """A search (``configs/sweep/<name>.yaml``, used by ``experiments.sweep``)."""

    num_samples: int = 8                # trials
    max_concurrent: int = 1             # trials at once (1 here; more on a cluster)
    cpus_per_trial: int = 1             # each trial samples in its own process
    top_k: int = 2                      # best configurations re-run with fresh seeds
    reruns: int = 2                     # fresh seeds per re-run configuration
    asha: AshaSchema = field(default_factory=AshaSchema)
    # dotted config key -> {type: loguniform|uniform|int|choice, low, high | values}
    space: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SimulatorGroups:
    """The config groups that say which users an app simulates (filled by the groups)."""

    env: Any = None
    persona: Any = None
    reward: Any = None


@dataclass
class TrainSchema(SimulatorGroups):
    """The primary config of ``experiments.train``; the groups fill the ``Any`` fields."""

    agent: Any = None
    logger: Any = None
    eval: Any = None
    seed: int = 0
    budget: int = 3_500_000             # env steps to train for
    resume: bool = False
    trust_checkpoint: bool = False      # resume from a checkpoint run.json has no match for
    progress: bool = True
    verbose: bool = False               # other libraries' logs and warnings on the console
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    ray: RaySchema = field(default_factory=RaySchema)
    sweep: Any = None                   # experiments.sweep only: the search (sweep group)


# ---------------------------------------------------------------- the other apps' configs
@dataclass
class ExplorationSchema:
    """How a policy acts (``agents.serving.exploration.Exploration``): collect's,
    evaluate's and serve's ``exploration`` group, each with its app's defaults."""

    mode: str = "greedy"                # greedy | sample | epsilon
    epsilon: float = 0.0                # epsilon mode: probability of a uniform action
    temperature: float = 1.0            # sample mode: p^(1/τ); 1 is the policy itself


@dataclass
class CollectSchema(SimulatorGroups):
    """``experiments.collect`` (``configs/collect.yaml``)."""

    behaviour: str = "persona_router"   # a baseline's name, or a policy bundle directory
    exploration: ExplorationSchema = field(
        default_factory=lambda: ExplorationSchema("epsilon", epsilon=0.2))
    episodes: int = 10000
    seed: int = 0
    warmup_steps: int = 2000
    record_truth: bool = False
    user_id: str = "hash"               # hash: keyed hash under PERSONARL_PII_KEY | drop
    out: Optional[str] = None
    overwrite: bool = False             # replace an existing file at ``out``
    verbose: bool = False


@dataclass
class IntervalSchema:
    resamples: int = 1000
    alpha: float = 0.05
    refit: bool = False
    refit_resamples: int = 200


@dataclass
class EvaluateSchema:
    """``experiments.evaluate`` (``configs/evaluate.yaml``)."""

    data: Optional[str] = None          # a file or a log dir; or registry= and model=
    registry: Optional[str] = None
    model: Optional[str] = None
    stage: Optional[str] = None
    version: Optional[int] = None
    # lists, checked by experiments.evaluate itself (its message shows the list syntax)
    policies: Any = field(default_factory=lambda: ["greedy", "random"])
    exploration: ExplorationSchema = field(default_factory=ExplorationSchema)
    estimators: Any = None
    gamma: float = 1.0
    switch_lambda: float = 100.0
    ci: IntervalSchema = field(default_factory=IntervalSchema)
    folds: int = 2
    seed: int = 0
    warmup_steps: int = 2000
    truth_episodes: int = 20000
    normalisation_episodes: int = 2000
    arm: Optional[str] = None           # decision logs: one arm's episodes (null: every arm)
    progress: bool = True
    verbose: bool = False


@dataclass
class ReportSchema:
    """``experiments.report`` (``configs/report.yaml``)."""

    dir: str = "???"                    # required: the multirun or sweep directory
    bootstrap: int = 2000
    seed: int = 0


@dataclass
class ReviewSchema:
    """``experiments.discover``'s review of one event."""

    events: Optional[str] = None        # an events.parquet: review instead of discovering
    id: Optional[str] = None            # the event's id (the report lists them)
    status: str = "approved"            # approved | rejected | pending


@dataclass
class DiscoverSchema:
    """``experiments.discover`` (``configs/discover.yaml``)."""

    persona: Any = None
    users: int = 20_000
    windows: int = 6
    interactions: int = 200
    k: Optional[int] = None
    k_min: int = 2
    k_max: int = 10
    seed: int = 0
    alpha: float = 0.01
    min_share: float = 0.05
    min_shift: float = 0.05
    review: ReviewSchema = field(default_factory=ReviewSchema)
    verbose: bool = False


@dataclass
class RankSchema:
    """``experiments.rank`` (``configs/rank.yaml``)."""

    data: str = "???"                   # required: an AgentRouting log (experiments.collect)
    persona_from: str = "fusion"        # fusion | latent
    min_confidence: float = 0.6
    temperature: float = 0.05
    level: float = 0.95
    verbose: bool = False


@dataclass
class AnonymiseSchema:
    """``experiments.anonymise`` (``configs/anonymise.yaml``)."""

    data: str = "???"                   # required: a log from experiments.collect
    k: int = 5
    quasi_identifiers: List[str] = field(
        default_factory=lambda: ["age_band", "city", "group"])
    max_suppression: float = 0.05
    verbose: bool = False


@dataclass
class SynthesizeSchema:
    """``experiments.synthesize`` (``configs/synthesize.yaml``)."""

    persona: Any = None
    generator: str = "gmm"
    table: str = "behaviour"
    data: Optional[str] = None
    users: int = 10_000
    seed: int = 0
    epsilon: Optional[float] = None
    delta: float = 1e-5
    budget: Optional[float] = None
    components: int = 8
    epochs: int = 30
    samples: Optional[int] = None
    gate_tolerance: float = 0.03
    utility: bool = False
    episodes: int = 2000
    warmup_steps: int = 2000
    verbose: bool = False


@dataclass
class AnnotatorSchema:
    count: int = 50                     # personas of the population who annotate
    tau: float = 0.02                   # noise scale (reward units), x [0.5, 1.5] by trait
    flip: float = 0.05                  # flip rate, x [0.5, 1.5] by trait


@dataclass
class BiasSchema:
    taste: Optional[str] = "flattery"   # rewards.preferences.STYLE_BIASES
    strength: float = 0.4               # reward units, x [0.5, 1.5] by trait


#: ``rewards.reward_model.BradleyTerryConfig``
RewardModelSchema = _mirror(BradleyTerryConfig, "RewardModelSchema", {"hidden": List[int]})


@dataclass
class EnsembleSchema:
    members: int = 5
    objective: str = "worst_case"       # mean | worst_case | uncertainty_weighted
    penalty: float = 1.0                # lambda of uncertainty_weighted


@dataclass
class ContextPPOSchema:
    """``agents.learners.context_ppo.ContextPPOConfig`` but ``base_sd`` (the lab's own).
    Written out, not mirrored: the serving wing imports this module and must not import
    ``agents.learners``; ``tests/test_overoptimisation.py`` holds the two equal."""

    timesteps: int = 400_000
    snapshots: int = 16
    lanes: int = 512
    n_steps: int = 4
    batch_size: int = 256
    epochs: int = 10
    lr: float = 3e-4
    clip: float = 0.2
    hidden: List[int] = field(default_factory=lambda: [64, 64])


@dataclass
class PreferencesSchema:
    """``experiments.preferences`` (``configs/preferences.yaml``)."""

    persona: Any = None
    task: str = "adaptation"            # adaptation | routing
    action_mode: str = "continuous"     # PersonalityAdaptation's: continuous | discrete
    context: str = "profile"            # observation | profile (envs.turns)
    pairs: int = 210_000
    holdout: int = 10_000
    candidate_sd: float = 0.35
    seed: int = 0
    annotators: AnnotatorSchema = field(default_factory=AnnotatorSchema)
    bias: BiasSchema = field(default_factory=lambda: BiasSchema(taste=None, strength=0.0))
    model: RewardModelSchema = field(default_factory=RewardModelSchema)
    export: bool = False
    formats: List[str] = field(default_factory=lambda: ["dpo", "dpo_conversational", "chat"])
    verbose: bool = False


@dataclass
class OveroptimisationSchema:
    """``experiments.overoptimisation`` (``configs/overoptimisation.yaml``)."""

    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    contexts: int = 60_000
    eval_contexts: int = 1_000
    max_n: int = 1024
    samples: int = 16
    base_sd: float = 0.2
    pair_sd: float = 0.35
    annotators: AnnotatorSchema = field(default_factory=AnnotatorSchema)
    bias: BiasSchema = field(default_factory=BiasSchema)
    model: RewardModelSchema = field(default_factory=RewardModelSchema)
    ensemble: EnsembleSchema = field(default_factory=EnsembleSchema)
    ppo: ContextPPOSchema = field(default_factory=ContextPPOSchema)
    level: float = 0.95
    verbose: bool = False


@dataclass
class AbtestSchema(SimulatorGroups):
    """``experiments.abtest`` (``configs/abtest.yaml``)."""

    mode: str = "simulated"             # simulated | logs
    logs: Optional[str] = None          # mode=logs: a server's log directory
    control: str = "persona_router"     # a baseline's name, or a policy bundle directory
    treatment: str = "greedy"
    users: int = 20_000                 # both arms together
    share: float = 0.5                  # the treatment's share of the users
    primary: str = "return"
    guardrail: str = "return"           # what the rollback rule watches
    mde: float = 0.02                   # relative minimum detectable effect (power analysis)
    alpha: float = 0.05
    looks: int = 20
    rollback_below: float = -0.05       # roll back when the sequence's upper bound is below
    min_group: int = 100                # users a group needs to be scored for fairness
    warmup_steps: int = 2000
    registry: Optional[str] = None      # arms from a registry: production vs ``candidate``
    model: Optional[str] = None
    candidate: Optional[int] = None
    seed: int = 0
    verbose: bool = False


@dataclass
class EraseSchema:
    """``experiments.erase`` (``configs/erase.yaml``)."""

    run_dir: str = "???"                # required: the directory to erase the user from
    user_id: Optional[str] = None       # the raw id, hashed with PERSONARL_PII_KEY
    user_hash: Optional[str] = None     # or the pseudonym itself (hmac-sha256:…)
    dry_run: bool = False               # only say where the user is
    verbose: bool = False


# ---------------------------------------------------------------- export, serve, registry
@dataclass
class ExportSchema:
    checkpoint: str = "???"        # a run's checkpoints/iter_NNNNNN
    out: Optional[str] = None      # bundle directory; default <run dir>/policy
    overwrite: bool = False        # replace an existing bundle at ``out``


@dataclass
class TrafficSchema:
    mode: str = "single"            # single | canary | ab | shadow
    candidate: Optional[str] = None   # a bundle dir; with a registry: a stage or a version
    share: float = 0.1              # the candidate's share of users (canary, ab)
    salt: str = "personarl"         # of the user-id hash that makes assignment sticky


@dataclass
class LogSchema:
    user_id: str = "hash"           # hash (HMAC-SHA256 under PERSONARL_PII_KEY) | drop


@dataclass
class ServeSchema:
    """``experiments.serve`` (``configs/serve.yaml``)."""

    bundle: Optional[str] = None    # a bundle directory, or
    registry: Optional[str] = None  # a registry directory, with
    model: Optional[str] = None     #   the model's name and
    stage: str = "production"       #   the stage to serve (or:)
    version: Optional[int] = None   #   a version number
    exploration: ExplorationSchema = field(
        default_factory=lambda: ExplorationSchema(epsilon=0.05))
    traffic: TrafficSchema = field(default_factory=TrafficSchema)
    host: str = "127.0.0.1"
    port: int = 8000
    log_dir: Optional[str] = None   # default: <hydra run dir>/decision_logs
    log: LogSchema = field(default_factory=LogSchema)
    segment_rows: int = 10000       # decision-log rows per segment before it becomes Parquet
    max_body_bytes: int = 1048576
    max_batch: int = 1024
    feedback_window: int = 1000000  # feedback accepted for this many most recent decisions
    max_bundle_file_bytes: int = 268435456   # larger bundle files are refused unread
    seed: int = 0                   # exploration and random traffic assignment


@dataclass
class RegistrySchema:
    registry: str = "outputs/registry"   # the registry directory
    action: str = "list"            # register | list | stage | promote | rollback
    name: Optional[str] = None      # the model's name
    bundle: Optional[str] = None    # register: the bundle directory to copy in
    version: Optional[int] = None   # stage, promote: which version
    stage: Optional[str] = None     # stage: none | staging | archived
    note: str = ""                  # register: a free-text note kept in the index


@dataclass
class SimulateUsersSchema:
    """``experiments.simulate_users`` (``configs/simulate_users.yaml``)."""

    url: str = "http://127.0.0.1:8000"
    episodes: int = 300
    seed: int = 0
    progress: bool = True
    verbose: bool = False


#: ``{app: {old option: current option}}``: options renamed since a release, named in the
#: error an old command line gets (issue 17: one vocabulary for exploration)
_RENAMED = {"evaluate": {"mode": "exploration.mode"}}


def renamed_options(config_name: str) -> dict[str, str]:
    """``{old option: what it became}`` for app ``config_name``: its own renamings
    (``'exploration.mode'``) and every env's renamed arguments (``EnvRecord.renamed``) as
    ``env.<old>`` (``"'env.horizon' with env=adaptation"``)."""
    out: dict[str, list[str]] = {}
    for env_id in env_ids():
        rec = record(env_id)
        for old, new in rec.renamed.items():
            out.setdefault(f"env.{old}", []).append(
                f"'env.{new}' with env={rec.config_name}")
    own = {old: repr(new) for old, new in _RENAMED.get(config_name, {}).items()}
    return {**{k: "; ".join(v) for k, v in out.items()}, **own}


#: app config name -> its schema (the YAML starts from ``<name>_schema``)
APP_SCHEMAS = {"train": TrainSchema, "collect": CollectSchema, "evaluate": EvaluateSchema,
               "report": ReportSchema, "export": ExportSchema, "serve": ServeSchema,
               "registry": RegistrySchema, "discover": DiscoverSchema,
               "rank": RankSchema, "erase": EraseSchema,
               "anonymise": AnonymiseSchema, "synthesize": SynthesizeSchema,
               "simulate_users": SimulateUsersSchema,
               "preferences": PreferencesSchema, "overoptimisation": OveroptimisationSchema,
               "abtest": AbtestSchema}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    for group, name, node in (
            *env_schemas(),
            ("schema/persona", "persona", PersonaSchema),
            ("schema/reward", "learned", LearnedRewardSchema),
            ("schema/agent", "ppo", PPOSchema),
            ("schema/agent", "baseline", BaselineSchema),
            ("schema/logger", "logger", LoggerSchema),
            ("schema/eval", "eval", EvalSchema),
            ("schema/sweep", "sweep", SweepSchema)):
        cs.store(group=group, name=name, node=node)
    for name, node in APP_SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)
