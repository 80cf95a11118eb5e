#version 450
#define RB 2
#define SGS 4
#include "attn_fa.glsl"
