"""Every stage of the OLMo pipeline as Tango steps; importing this package registers them."""
import integrations.tango_compat  # noqa: F401  (fixes Tango before any step is used)
from steps import export  # noqa: F401
from steps.adapt import steps as adapt_steps  # noqa: F401
from steps.corpus import steps as corpus_steps  # noqa: F401
from steps.data import steps as data_steps  # noqa: F401
from steps.evaluation import steps as evaluation_steps  # noqa: F401
from steps.report import steps as report_steps  # noqa: F401
from steps.train import steps as train_steps  # noqa: F401
