"""Train a classifier on the Iris data set, report its accuracy, save it.

gantry reads the accuracy from the one line this program prints in the form
"Model accuracy: 0.9667"; any other line must not mention accuracy. The
trained model is saved as model.joblib in the output directory that gantry
names in GANTRY_OUTPUT_DIR (/output when unset); gantry ships that directory
in the image it pushes.

Run with --evaluate, the program trains nothing: it loads the model saved
there and reports its accuracy on the same held-out samples, so the image
that gantry pushed prints the accuracy that passed its gate.
"""
import argparse
import os
import sys

import joblib
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

OUTPUT_DIR = os.environ.get("GANTRY_OUTPUT_DIR", "/output")
MODEL = os.path.join(OUTPUT_DIR, "model.joblib")


def split():
    """Load the data set and split it, the same way on every run."""
    iris = load_iris()
    df = pd.DataFrame(iris.data, columns=iris.feature_names)
    df["target"] = iris.target
    X = df.drop(columns="target")
    y = df["target"]
    # flush=True: stdout is a pipe in a container, and gantry reads it as it comes.
    print(f"Loaded the Iris data set: {len(df)} samples, {X.shape[1]} features", flush=True)
    # A fixed random_state: --evaluate holds out the samples training held out.
    return train_test_split(X, y, test_size=0.2, random_state=42)


def report(model, X_test, y_test):
    accuracy = accuracy_score(y_test, model.predict(X_test))
    print(f"Model accuracy: {accuracy:.4f}", flush=True)


def train():
    X_train, X_test, y_train, y_test = split()
    print(f"Training a random forest on {len(X_train)} samples, testing on {len(X_test)}", flush=True)
    model = RandomForestClassifier(n_estimators=100, random_state=42)
    model.fit(X_train, y_train)
    report(model, X_test, y_test)

    os.makedirs(OUTPUT_DIR, exist_ok=True)
    joblib.dump(model, MODEL)
    print(f"Saved the model to {MODEL}", flush=True)


def evaluate():
    if not os.path.isfile(MODEL):
        sys.exit(f"No model at {MODEL}: train one first (run without --evaluate), "
                 "or set GANTRY_OUTPUT_DIR to the directory that holds model.joblib")
    model = joblib.load(MODEL)
    _, X_test, _, y_test = split()
    print(f"Evaluating {MODEL} on {len(X_test)} held-out samples", flush=True)
    report(model, X_test, y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", action="store_true",
                        help="report the saved model's accuracy without training")
    if parser.parse_args().evaluate:
        evaluate()
    else:
        train()


if __name__ == "__main__":
    main()
