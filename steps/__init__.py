"""Every stage of the OLMo pipeline: plain-Python logic per stage, and thin Tango steps in each stage's ``steps``
module (``steps.common.step`` is their base); the ``olmo-tango`` command on top (``cli``, ``commands``).
``include_package: [steps]`` in tango.yml imports them all; ``tests/test_layering.py`` checks the layers."""
