"""corral: learn what each AI agent does, then enforce it in the kernel with BPF."""

__version__ = "0.1.0"
