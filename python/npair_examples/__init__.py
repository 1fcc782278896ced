"""Example tools for the N-pair metric-learning layers.

Each module is a small command-line tool with a ``main()`` and ``--help``::

    python -m npair_examples.glyphs      # CJK characters from Debian's fonts as an image list
    python -m npair_examples.glyph_nets  # the glyphs example's nets (models/glyphs/)
    python -m npair_examples.evaluate    # R@K, MAP@R, R-precision, NMI on held-out classes
    python -m npair_examples.convergence # the same against training iteration, per snapshot
    python -m npair_examples.plot_log    # loss and R@1 against iteration from a caffe log
    python -m npair_examples.plot_embedding  # t-SNE map of held-out embeddings
    python -m npair_examples.plot_retrieval  # queries and their nearest neighbours
    python -m npair_examples.batches     # N-pair batch order for ImageData / HDF5Data
    python -m npair_examples.digits      # scikit-learn's digits as N-pair batches (the
                                         # small net the reliability tests train)

``metrics``, ``image_list`` and ``caffe_log`` are the libraries behind them (no Caffe
needed).
"""
