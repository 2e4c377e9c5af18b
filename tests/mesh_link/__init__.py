"""Tests of the mesh link: radio bridge, protocol core, driver, airtime benchmark."""
