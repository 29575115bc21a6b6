"""The paper's offline comparison: ``python -m torchrec_transact.ablation`` (see
:mod:`torchrec_transact.ablation.runner`)."""

from torchrec_transact.ablation.report import chart, markdown, summarise, verdict  # noqa: F401
from torchrec_transact.ablation.runner import (  # noqa: F401
    main,
    recent_category_share,
    run_all,
    run_dataset,
    run_variant,
    variant_config,
)
from torchrec_transact.ablation.variants import (  # noqa: F401
    ALL_VARIANTS,
    BASELINE,
    Budget,
    budget,
    comparisons,
    CRITEO,
    DATASETS,
    default_variants,
    ENCODERS,
    PARTS,
    Variant,
)
