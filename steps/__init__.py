"""Every stage of the OLMo pipeline: plain-Python logic per stage, and thin Tango steps in each
stage's ``steps`` module. ``include_package: [steps]`` in tango.yml imports them all."""
