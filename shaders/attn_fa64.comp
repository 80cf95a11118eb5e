#version 450
// attn_fa.glsl for head size 64 (all-mpnet-base-v2, JinaBERT small and base), 16 query rows a
// subgroup, 64 queries a workgroup: with two 16-row blocks a subgroup the fp32 output and
// scores of a 64-wide head would hold about twice attn_fa.comp's registers.
#define HD 64
#define RB 1
#define SGS 4
#include "attn_fa.glsl"
