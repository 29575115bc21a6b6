from setuptools import find_packages, setup

setup(
    name="torchrec_transact",
    version="0.1.0",
    description="TransAct, Pinterest's realtime user-action transformer, for TorchRec models",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["torchrec_transact", "torchrec_transact.*"]),
    python_requires=">=3.10",
    # torchrec and an fbgemm build are required too, but are not listed here: torchrec
    # declares the CUDA fbgemm-gpu (and pins torchmetrics==1.0.3), so pip resolving it
    # on a CPU machine installs fbgemm-gpu over fbgemm-gpu-cpu, which then fails to load.
    # Install them first (README: `pip install --no-deps torchrec`), or ask for the
    # `cuda` extra on a CUDA machine. Importing the package without them says so.
    install_requires=[
        "torch>=2.6",
        "tensordict",
        "torchmetrics",
        "pyre-extensions",
        "tqdm",
        "iopath",
        "numpy",
        "pyarrow",
    ],
    entry_points={"console_scripts": [
        "transact-train=torchrec_transact.train:cli", "transact-prepare=torchrec_transact.data.prepare:cli",
    ]},
    extras_require={
        "cuda": ["torchrec>=1.8", "fbgemm-gpu>=1.8"],
        "launch": ["torchx>=0.7"],
        "test": ["pytest", "hypothesis"],
    },
)
