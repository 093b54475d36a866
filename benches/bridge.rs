//! Benchmark of the bridge worker (written with the worker).

fn main() {}
