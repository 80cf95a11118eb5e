#version 450
// attn_fa.glsl with 16 query rows a subgroup (64 queries a workgroup), for comparisons
// (EMBED_VK_ATTN=fa16): each K and V fragment feeds one MMA instead of two.
#define RB 1
#define SGS 4
#include "attn_fa.glsl"
