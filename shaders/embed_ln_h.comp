// embed_ln_h.comp — embedding gather + LayerNorm into the f16 residual stream (see layernorm.glsl).
#version 450
#define EMBED 1
#define OUT_F16 1
#include "layernorm.glsl"
