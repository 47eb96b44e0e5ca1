"""Tests of the recipe tricks (EMA, gradient clipping, linear scaling, zero-γ, no bias decay), one module each."""
