import numpy as np
import tensorflow as tf

from cpsl_tf.gradients import pass_by_pass_gradients, when_applied


def _variables():
    rng = np.random.default_rng(0)
    shared = tf.Variable(rng.normal(size=(3, 4)).astype(np.float32), name="shared")
    first_only = tf.Variable(rng.normal(size=(4,)).astype(np.float32), name="first_only")
    unused = tf.Variable(np.ones(2, np.float32), name="unused")
    return shared, first_only, unused


def _passes(shared, first_only):
    x1 = tf.constant(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    x2 = tf.constant(np.linspace(2, -2, 6, dtype=np.float32).reshape(2, 3))

    def first():
        loss = tf.reduce_sum(tf.tanh(tf.matmul(x1, shared) + first_only) ** 2)
        return loss, {"first": loss}

    def second():
        loss = tf.reduce_mean(tf.exp(0.1 * tf.matmul(x2, shared, name="second_matmul")))
        return 3.0 * loss, {"second": loss}

    return first, second


def test_sum_of_pass_gradients_equals_one_tape_and_untouched_variables_get_none():
    shared, first_only, unused = _variables()
    first, second = _passes(shared, first_only)
    variables = [shared, first_only, unused]
    gradients, outputs = pass_by_pass_gradients((first, second), variables, scale=lambda loss: 0.5 * loss)

    with tf.GradientTape() as tape:
        total = 0.5 * (first()[0] + second()[0])
    expected = tape.gradient(total, variables)
    np.testing.assert_allclose(gradients[0].numpy(), expected[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(gradients[1].numpy(), expected[1].numpy(), rtol=1e-6)
    assert gradients[2] is None and expected[2] is None
    assert set(outputs[0]) == {"first"} and set(outputs[1]) == {"second"}


def test_a_pass_starts_only_after_the_previous_pass_gradients_in_a_graph():
    shared, first_only, _ = _variables()
    first, second = _passes(shared, first_only)

    @tf.function
    def step():
        return pass_by_pass_gradients((first, second), [shared, first_only])[0]

    graph = step.get_concrete_function().graph
    matmul = next(op for op in graph.get_operations() if op.name.endswith("second_matmul"))
    # The second pass's forward waits (through its inputs or control inputs) for the first pass's
    # gradients, so the first pass's activations can be freed before the second pass allocates its own.
    ancestors, frontier = set(), [matmul]
    while frontier:
        op = frontier.pop()
        for parent in [t.op for t in op.inputs] + list(op.control_inputs):
            if parent.name not in ancestors:
                ancestors.add(parent.name)
                frontier.append(parent)
    assert any(name.startswith("gradient_tape/") for name in ancestors), sorted(ancestors)


def test_when_applied_runs_the_update_only_after_a_change():
    counter = tf.Variable(0)

    def update():
        counter.assign_add(1)

    when_applied(True, update)
    when_applied(False, update)
    step = tf.function(lambda applied: when_applied(applied, update))
    step(tf.constant(True))
    step(tf.constant(False))
    assert int(counter.numpy()) == 2
