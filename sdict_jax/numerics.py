"""Mixed-precision contractions shared by the operators."""

import jax
import jax.numpy as jnp


def einsum_f32(subscripts: str, *operands) -> jax.Array:
  """jnp.einsum accumulating and returning float32, whatever the operand dtypes.

  On accelerators bf16 operands stay bf16 (a bf16 × bf16 → f32 dot). XLA's CPU
  runtime has no such dot ("DotThunk: BF16 x BF16 = F32" is unimplemented), so
  there the operands are upcast first: the same result, at float32 speed.
  """
  if jax.default_backend() == "cpu":
    operands = [jnp.asarray(x, jnp.float32) for x in operands]
  return jnp.einsum(subscripts, *operands, preferred_element_type=jnp.float32)
