"""Measured experiments on the shapes world: each module runs one task over many seeds, scores every
image with the shapes detector and returns rates / means with 95 % intervals (:mod:`ebca_viz.claims`)
plus representative images; the notebooks print them and check them."""
