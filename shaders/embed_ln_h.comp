// embed_ln_h.comp — embedding gather + LayerNorm, f32 output plus an f16 copy (see layernorm.glsl).
#version 450
#define EMBED 1
#define OUT_F16 1
#include "layernorm.glsl"
