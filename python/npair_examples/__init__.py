"""Example tools for the N-pair metric-learning layers.

Each module is a small command-line tool with a ``main()`` and ``--help``::

    python -m npair_examples.batches    # N-pair batch order for ImageData / HDF5Data
    python -m npair_examples.digits     # prepare scikit-learn's digits as N-pair batches
    python -m npair_examples.evaluate   # Recall@K and NMI of embeddings on held-out data
    python -m npair_examples.plot_log   # loss and R@1 against iteration from a caffe log
    python -m npair_examples.plot_embedding  # 2-D map of held-out embeddings

``metrics`` and ``caffe_log`` are the libraries behind them (no Caffe needed).
"""
