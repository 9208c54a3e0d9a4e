"""Every ``method=``: the SGD probe (with any feature augmenter), fine-tuning, and the
closed-form classifiers (logreg, knn, ncm, gda). Each ``fit`` returns a ``FitResult``."""
