/* libFuzzer harness for the safetensors header parser: arbitrary bytes must give EMB_OK with
 * every tensor inside the buffer, or an error with a message — never a crash, leak or
 * out-of-bounds read. Build and run with `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	safetensors st;
	emb_err err = { 0 };
	if (safetensors_parse(data, size, "fuzz", &st, &err) == EMB_OK) {
		for (size_t i = 0; i < st.n; i++) {
			const st_tensor *t = &st.tensors[i];
			if (t->data < data || t->data + t->nbytes > data + size ||
			    t->nbytes != t->count * st_dtype_size(t->dtype))
				__builtin_trap();
			volatile uint8_t sink = 0;
			if (t->nbytes)
				sink ^= t->data[0] ^ t->data[t->nbytes - 1];
			(void)sink;
			if (safetensors_find(&st, t->name) == NULL)
				__builtin_trap();
		}
		safetensors_close(&st);
	} else if (err.msg[0] == 0) {
		__builtin_trap(); /* every error carries a message */
	}
	return 0;
}
