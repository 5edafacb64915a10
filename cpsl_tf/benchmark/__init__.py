"""The generated two-domain benchmark (a game-like source, a photograph-like target), apart from the readers.

``generate`` writes the image sets in the GTA5 and Cityscapes layouts, so ``cpsl_tf.data.datasets`` reads
them like real data; ``style`` holds the domain styles (geometry, densities, appearance, photometry);
``scene`` lays out and paints one street scene, from the drawing primitives of ``canvas`` (pinhole camera,
one rasteriser for colours and labels) and the street objects of ``objects``.
"""
