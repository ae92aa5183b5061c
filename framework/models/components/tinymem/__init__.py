"""TinyMem components: the GPT-2 builder/loader (``gpt2``), train-time regularizers (``regularizers``), fine-tuning
mitigations (``fine_tuning``) and the unlearning methods (``unlearning``). Import the submodules directly."""
