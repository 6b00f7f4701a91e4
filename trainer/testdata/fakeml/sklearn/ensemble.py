import os
from collections import Counter


class RandomForestClassifier:
    """Remembers the training samples; guesses the commonest class of the others."""

    def __init__(self, n_estimators=100, random_state=None):
        self.seen = {}
        self.common = None

    def fit(self, X, y):
        with open(os.environ["FAKEML_FITS"], "a") as f:
            f.write("fit\n")
        self.seen = dict(zip(X, y))
        self.common = Counter(y).most_common(1)[0][0]
        return self

    def predict(self, X):
        return [self.seen.get(x, self.common) for x in X]
