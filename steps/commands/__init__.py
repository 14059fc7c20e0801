"""The logic of the ``olmo-tango`` commands (``steps.cli``): questions about a workspace's training data
(``regenerate``) and the extra nodes of a training job (``train_node``). The command layer: it may use the
Tango steps of every stage; no stage imports it."""
