// add_ln_h.comp — residual add + LayerNorm on the f16 residual stream (see layernorm.glsl),
// for devices without subgroup shuffles (elsewhere add_ln_sg.comp).
#version 450
#define EMBED 0
#define OUT_F16 1
#include "layernorm.glsl"
