"""Small real data shipped with snnconv (a Fashion-MNIST subset); read through the `builtin` data spec."""
