"""``python -m sagan_jax.main ARGS`` in the test process: errors raise instead of exiting, so a
test can assert the exact exception; the flags are reset afterwards."""


def run_in_process(args):
    from sagan_jax import main

    main.FLAGS.unparse_flags()
    try:
        main.FLAGS(["sagan_jax"] + list(args))
        return main.run(main.config_from_flags())
    finally:
        main.FLAGS.unparse_flags()
