"""The plain sections of a training config as dataclasses, one concept per module; each field is documented by
the string under it, from which the docs' config reference is generated. `rl.train_config` puts them together
and checks what one field's type and range cannot say."""
