import random


def train_test_split(X, y, test_size, random_state=None):
    rows = X.rows()
    order = list(range(len(rows)))
    random.Random(random_state).shuffle(order)
    n = int(len(rows) * test_size)
    test, train = order[:n], order[n:]
    return ([rows[i] for i in train], [rows[i] for i in test],
            [y[i] for i in train], [y[i] for i in test])
