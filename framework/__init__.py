"""The training engine: a compiled custom loop over tf.distribute strategies."""
