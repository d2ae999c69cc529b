"""Synthetic users: generators fitted to tables of users, with or without differential
privacy, and released as files a population can sample from.

* ``table`` — what a generator models (``TableSpec``: continuous columns with public
  bounds, a simplex of weights, categorical columns) and the encoder to and from a matrix;
* ``gmm`` — a Gaussian mixture (scikit-learn) and DP-GMM (DP k-means initialisation plus
  noisy sufficient statistics, written here);
* ``vae`` — a small VAE (torch), with DP-SGD (Opacus) stopped by the privacy ledger;
* ``base`` — sampling with a ``source`` tag, augmenting, saving and loading;
* ``persona`` — the latent persona table the envs consume and a generator of it as a
  population (``PopulationConfig.generator``).

Fidelity and memorisation are measured by ``synth.fidelity``. Needs the ``privacy`` extra
(scikit-learn, pandas, torch, Opacus, dp-accounting).
"""

from synth.generators.base import SOURCES, Generator, load_generator
from synth.generators.gmm import GaussianMixtureGenerator, fit_gmm
from synth.generators.table import Column, TableEncoder, TableSpec, check_table
from synth.generators.vae import VAEGenerator, fit_vae

__all__ = ["SOURCES", "Generator", "load_generator", "GaussianMixtureGenerator", "fit_gmm",
           "Column", "TableEncoder", "TableSpec", "check_table", "VAEGenerator", "fit_vae"]
