"""A k-anonymous table of a log's users, and what generalising their quasi-identifiers cost.

    python -m experiments.anonymise data=<logged.parquet> k=5

``data`` is a log from ``experiments.collect``: every row says who decided (its ``users``
columns). ``ope.features.user_table`` makes one row per user — quasi-identifiers, consent,
episodes, decisions, return — and ``synth.privacy.anonymity.k_anonymise`` generalises the
``quasi_identifiers`` over their hierarchies (``synth.demographics``) until every
combination left is shared by at least ``k`` users, suppressing at most
``max_suppression`` of them. Only consenting users enter it; the user id (a direct
identifier) and the consent flag are dropped from what is written.

Writes into the run directory ``users_k<k>.parquet`` (the released table) and
``report.md`` / ``report.html``: the smallest class before (the naive release) and after,
the level chosen per quasi-identifier and what was lost (rows suppressed, discernibility,
C_avg, precision loss). k-anonymity is not differential privacy: the report says so.
Mistakes exit with status 2.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, human, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError

__all__ = ["anonymise_log", "main"]

log = logging.getLogger(__name__)
register_configs()


def anonymise_log(cfg: DictConfig, run_dir: Path) -> Path:
    """Anonymise per ``cfg`` into ``run_dir``; the report's path."""
    import numpy as np

    from ope.features import user_table
    from ope.files import read_logged
    from synth.demographics import hierarchies
    from synth.privacy.anonymity import k_anonymise, smallest_class
    from synth.privacy.consent import consenting

    path = Path(str(cfg.data))
    if not path.is_file():
        raise ConfigError(f"data={cfg.data!r} does not exist; give a Parquet file from "
                          "python -m experiments.collect")
    users = user_table(read_logged(path))
    quasi = [str(q) for q in cfg.quasi_identifiers]
    groups = sorted(set(users["group"]))
    result = k_anonymise(users, k=cfg.k, hierarchies=hierarchies(groups),
                         quasi_identifiers=quasi, max_suppression=cfg.max_suppression)
    naive = smallest_class(consenting(users), quasi)
    released = result.table.drop(columns=[c for c in ("user_id", "consent")
                                          if c in result.table.columns])
    out = run_dir / f"users_k{result.k}.parquet"
    released.reset_index(drop=True).to_parquet(out, index=False)
    log.info("k=%d reached over %d users: levels %s", result.k, len(released), result.levels)
    loss = result.loss
    b: list[Block] = [
        ("h1", f"A {result.k}-anonymous table of the users of {path.name}"),
        ("p", f"{len(users):,} users in `{cfg.data}`, {int(np.sum(users['consent'])):,} of "
              f"them consenting (only they are released). Quasi-identifiers: "
              f"{', '.join(quasi)}. Released as they were, the smallest group of users "
              f"sharing them has **{naive}** user(s); after generalising, **"
              f"{result.smallest_class}** (k = {result.k}), in {result.classes} groups."),
        ("table", (["quasi-identifier", "level", "distinct values before", "after"],
                   [[q, result.level_names[q], loss["distinct_before"][q],
                     loss["distinct_after"][q]] for q in quasi])),
        ("table", (["what was lost", "value"], [
            ["users suppressed", f"{result.suppressed} ({loss['suppressed_fraction']:.1%})"],
            ["discernibility Σ|E|² (+ N per suppressed)", human(loss["discernibility"])],
            ["C_avg (1 is ideal)", human(loss["c_avg"])],
            ["precision loss (0: nothing generalised)", human(loss["precision"])]])),
        ("p", f"Written: `{out.name}` — the quasi-identifiers as generalised, and each "
              "user's episodes, decisions and return; no user id. k-anonymity stops "
              "re-identification by linking on these columns; it is not differential "
              "privacy (a group may share its other values, and nothing bounds what the "
              "table reveals): releases with a guarantee spend from a privacy ledger "
              "(`synth.privacy.mechanisms`)."),
    ]
    return write_reports(run_dir, b)


@hydra.main(version_base="1.3", config_path="../configs", config_name="anonymise")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("anonymise", cfg, lambda: anonymise_log(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("anonymise", "anonymise")
    main()
