import boto3


def test_moto_server_serves_s3(moto):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="smoke")
    s3.put_object(Bucket="smoke", Key="a b/ü.txt", Body=b"hello")
    assert s3.get_object(Bucket="smoke", Key="a b/ü.txt")["Body"].read() == b"hello"
