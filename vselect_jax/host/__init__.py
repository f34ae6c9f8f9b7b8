"""Host-side (numpy) preparation: everything data-dependent is computed here,
so the device sees fixed, bucketed shapes and compiles once per bucket.

* ``buckets``        static size buckets;
* ``vision_layout``  the vision tower's window order, segments, rotary coords;
* ``rope_index``     M-RoPE position ids;
* ``rows``           the one per-row batch format (inference and training);
* ``inputs``         HF-processor inputs -> rows (validation included);
* ``train_batch``    packed training rows -> rows;
* ``budgets``        budgets -> k per token and per row.
"""
