"""Train a classifier on the Iris data set and report its accuracy.

gantry reads the accuracy from the one line this program prints in the form
"Model accuracy: 0.9667"; any other line must not mention accuracy. The
trained model is saved to model.joblib.
"""
import joblib
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split


def main():
    iris = load_iris()
    df = pd.DataFrame(iris.data, columns=iris.feature_names)
    df["target"] = iris.target
    X = df.drop(columns="target")
    y = df["target"]
    # flush=True: stdout is a pipe in a container, and gantry reads it as it comes.
    print(f"Loaded the Iris data set: {len(df)} samples, {X.shape[1]} features", flush=True)

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    print(f"Training a random forest on {len(X_train)} samples, testing on {len(X_test)}", flush=True)
    model = RandomForestClassifier(n_estimators=100, random_state=42)
    model.fit(X_train, y_train)

    accuracy = accuracy_score(y_test, model.predict(X_test))
    print(f"Model accuracy: {accuracy:.4f}", flush=True)

    joblib.dump(model, "model.joblib")
    print("Saved the model to model.joblib", flush=True)


if __name__ == "__main__":
    main()
