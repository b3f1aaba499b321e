"""The compiled BPF objects (`make bpf`) and a copy of bpf/corral.h, shipped as package data."""
