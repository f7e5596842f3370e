"""The sandbox scopes objects by OpenAI project, as OpenAI does: a request sees only the objects of its own
project (its OpenAI-Project header, else the key's default project); another project's object answers 404 to
every lookup and delete, and is left out of every listing."""

import openai
import pytest


@pytest.fixture
def other(sandbox):
    client = sandbox.client(project="proj_other")
    yield client
    client.close()


def test_another_projects_objects_are_404_to_lookups_and_deletes_and_left_out_of_listings(sandbox, openai_client,
                                                                                           other):
    thread = other.beta.threads.create()
    conversation = other.conversations.create()
    store = other.vector_stores.create(name="theirs")
    file = other.files.create(file=("a.txt", b"x" * 10), purpose="assistants")
    container = other.containers.create(name="ci")
    mine = openai_client.vector_stores.create(name="mine")

    lookups = [
        lambda: openai_client.beta.threads.retrieve(thread.id),
        lambda: openai_client.conversations.retrieve(conversation.id),
        lambda: openai_client.vector_stores.retrieve(store.id),
        lambda: openai_client.files.retrieve(file.id),
        lambda: openai_client.containers.retrieve(container.id),
        lambda: openai_client.beta.threads.delete(thread.id),
        lambda: openai_client.conversations.delete(conversation.id),
        lambda: openai_client.vector_stores.delete(store.id),
        lambda: openai_client.files.delete(file.id),
        lambda: openai_client.containers.delete(container.id),
    ]
    for lookup in lookups:
        with pytest.raises(openai.NotFoundError):
            lookup()
    assert [s.id for s in openai_client.vector_stores.list()] == [mine.id]
    assert list(openai_client.files.list()) == [] and list(openai_client.containers.list()) == []
    # Still there, for their own project.
    assert [s.id for s in other.vector_stores.list()] == [store.id]
    assert other.beta.threads.delete(thread.id).deleted and thread.id not in sandbox.state.threads
    assert other.conversations.retrieve(conversation.id).id == conversation.id


def test_another_projects_file_cannot_be_attached(openai_client, other):
    file = other.files.create(file=("a.txt", b"x" * 10), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        openai_client.vector_stores.create(name="mine", file_ids=[file.id])


def test_a_project_key_works_in_its_own_project_only(sandbox, openai_client):
    sandbox.sandbox.add_project_key("sk-proj-b", "proj_b")
    own = sandbox.client(api_key="sk-proj-b")
    mismatched = sandbox.client(api_key="sk-proj-b", project="proj_default")
    store = own.vector_stores.create(name="b")
    assert sandbox.state.project_of[store.id] == "proj_b"  # no header: the key's project
    with pytest.raises(openai.AuthenticationError, match="should match project"):
        mismatched.vector_stores.list()
    with pytest.raises(openai.NotFoundError):
        openai_client.vector_stores.retrieve(store.id)
